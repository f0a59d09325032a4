//! Fused elementwise family (`shaders/fused.wgsl`): a tree of unary and binary maps
//! (`src/ops/elementwise.rs`'s table) over a few inputs, computed in one launch:
//! one generated WGSL kernel, one pass over blocks on the CPU. The plan builds these
//! at compile time from chains of elementwise nodes whose intermediate values
//! nobody else reads (`src/graph/fuse.rs`), so the intermediates are never written
//! to memory. Each map is evaluated exactly as its own kernel would (same
//! functions, same order, every intermediate an f32), so fusion never changes a CPU
//! result; a GPU compiler may contract a product and a sum into one `fma`.

use super::elementwise::{BinaryOp, UnaryOp};
use super::simplify;
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl, MAX_RANK};

const SHADER: &str = include_str!("../../shaders/fused.wgsl");

/// Most inputs of a fused kernel: with its output, WebGPU's default limit of eight
/// storage buffers per shader stage.
pub(crate) const MAX_INPUTS: usize = 7;

/// Most maps in one fused kernel (keeps generated shaders and CPU registers small).
pub(crate) const MAX_MAPS: usize = 16;

/// A tree of elementwise maps over the kernel's inputs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    /// Input `k`, read at the output's index (broadcast through its strides).
    Input(usize),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Number of maps in the tree.
    pub(crate) fn maps(&self) -> usize {
        match self {
            Expr::Input(_) => 0,
            Expr::Unary(_, x) => 1 + x.maps(),
            Expr::Binary(_, a, b) => 1 + a.maps() + b.maps(),
        }
    }

    /// The tree with every input index moved up by `by`.
    pub(crate) fn shifted(self, by: usize) -> Expr {
        match self {
            Expr::Input(k) => Expr::Input(k + by),
            Expr::Unary(op, x) => Expr::Unary(op, Box::new(x.shifted(by))),
            Expr::Binary(op, a, b) => Expr::Binary(op, Box::new(a.shifted(by)), Box::new(b.shifted(by))),
        }
    }

    /// The tree with input `k` renamed `to(k)`.
    pub(crate) fn remapped(self, to: &dyn Fn(usize) -> usize) -> Expr {
        match self {
            Expr::Input(k) => Expr::Input(to(k)),
            Expr::Unary(op, x) => Expr::Unary(op, Box::new(x.remapped(to))),
            Expr::Binary(op, a, b) => Expr::Binary(op, Box::new(a.remapped(to)), Box::new(b.remapped(to))),
        }
    }

    /// Post-order instructions, each writing the next register.
    fn program(&self, out: &mut Vec<Inst>) -> usize {
        let inst = match self {
            Expr::Input(k) => Inst::Load(*k),
            Expr::Unary(op, x) => Inst::Unary(*op, x.program(out)),
            Expr::Binary(op, a, b) => {
                let a = a.program(out);
                Inst::Binary(*op, a, b.program(out))
            }
        };
        out.push(inst);
        out.len() - 1
    }
}

/// One step of the evaluation: its operands are earlier registers.
#[derive(Clone, Copy, Debug)]
enum Inst {
    Load(usize),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
}

/// How an input is read at output index i.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Read {
    /// At i: it has the output's shape.
    Same,
    /// At 0: one value broadcast everywhere.
    One,
    /// Through its strides (0 along broadcast axes).
    Strided,
}

/// reads the inputs, writes [out]; strides are 0 along broadcast axes.
#[derive(Debug)]
pub(crate) struct FusedKernel {
    program: Vec<Inst>,
    shape: Vec<usize>,
    /// Per input, its strides over `shape`.
    strides: Vec<Vec<usize>>,
    /// Per input, how it is read (from its strides, once).
    reads: Vec<Read>,
}

impl FusedKernel {
    /// `expr` over inputs with the given strides over the output's `shape` (before
    /// simplification).
    pub(crate) fn new(expr: &Expr, shape: &[usize], strides: &[Vec<usize>]) -> FusedKernel {
        let refs: Vec<&[usize]> = strides.iter().map(Vec::as_slice).collect();
        let (shape, strides) = simplify(shape, &refs);
        let mut program = Vec::new();
        expr.program(&mut program);
        let contiguous = super::contiguous_strides(&shape);
        let reads = strides
            .iter()
            .map(|s| {
                if s.iter().all(|&s| s == 0) {
                    Read::One
                } else if *s == contiguous {
                    Read::Same
                } else {
                    Read::Strided
                }
            })
            .collect();
        FusedKernel {
            program,
            shape,
            strides,
            reads,
        }
    }

    /// [`Kernel::cpu`]: the program over blocks of [`BLOCK`] outputs, each
    /// instruction a loop over the block.
    #[inline(always)]
    fn run_blocks(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let n = self.n();
        let mut regs = vec![[0f32; BLOCK]; self.program.len()];
        let last = self.program.len() - 1;
        for start in (0..n).step_by(BLOCK) {
            let len = BLOCK.min(n - start);
            for (r, inst) in self.program.iter().enumerate() {
                let (done, rest) = regs.split_at_mut(r);
                let dst = &mut rest[0][..len];
                match *inst {
                    Inst::Load(k) => self.load(x[k], k, start, dst),
                    Inst::Unary(op, a) => op.map_slice(&done[a][..len], dst),
                    Inst::Binary(op, a, b) => op.map_slices(&done[a][..len], &done[b][..len], dst),
                }
            }
            out[0][start..start + len].copy_from_slice(&regs[last][..len]);
        }
    }

    fn n(&self) -> usize {
        self.shape.iter().product()
    }

    /// Input k's word for each output index in `start..start + out.len()`.
    fn load(&self, x: &[f32], k: usize, start: usize, out: &mut [f32]) {
        let strides = &self.strides[k];
        match self.reads[k] {
            Read::One => return out.fill(x[0]),
            Read::Same => return out.copy_from_slice(&x[start..start + out.len()]),
            Read::Strided => {}
        }
        for (j, o) in out.iter_mut().enumerate() {
            let mut rest = start + j;
            let mut at = 0;
            for d in (0..self.shape.len()).rev() {
                at += rest % self.shape[d] * strides[d];
                rest /= self.shape[d];
            }
            *o = x[at];
        }
    }
}

crate::backend::cpu::vmath::simd_fn! {
    /// [`FusedKernel`]'s CPU pass.
    fn fused_cpu(kernel: &FusedKernel, x: &[&[f32]], out: &mut [&mut [f32]]) {
        kernel.run_blocks(x, out)
    }
}

/// Outputs per block of the CPU evaluation (every register fits in L1).
const BLOCK: usize = 256;

impl Kernel for FusedKernel {
    fn reads(&self) -> usize {
        self.strides.len()
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        fused_cpu(self, x, out);
    }

    fn wgsl(&self) -> Wgsl {
        let n = self.n();
        debug_assert!(self.shape.len() <= MAX_RANK);
        let mut u = Uniforms::new()
            .u32("n", n)
            .u32("rank", self.shape.len())
            .dims("shape", &self.shape);
        const NAMES: [&str; MAX_INPUTS] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"];
        let mut defs = String::new();
        let mut loads = Vec::new();
        for (k, strides) in self.strides.iter().enumerate() {
            // Index of input k at output index i: i itself, 0, or through its strides.
            let index = if self.reads[k] == Read::Same {
                "i".to_string()
            } else if self.reads[k] == Read::One {
                "0u".to_string()
            } else {
                u = u.dims(NAMES[k], strides);
                defs += &format!(
                    "fn index{k}(i: u32) -> u32 {{\n    var rest = i;\n    var at = 0u;\n    \
                     for (var d = params.rank; d > 0u; d--) {{\n        let len = params_shape(d - 1u);\n        \
                     at += rest % len * params_{}(d - 1u);\n        rest = rest / len;\n    }}\n    return at;\n}}\n",
                    NAMES[k]
                );
                format!("index{k}(i)")
            };
            loads.push(format!("in{k}[{index}]"));
        }
        defs += &program_fn(&self.program, "fused_at(i: u32)", &loads, &[]);
        Wgsl::new(SHADER, "fused", u, Grid::Threads(n)).defs(defs)
    }
}

/// WGSL `fn {signature} -> f32` that evaluates `expr`, input k read by the WGSL
/// expression `loads[k]`, map by map as [`FusedKernel`]'s shader does (each map a
/// function of its own, named after the function); the unary maps' helpers come
/// first, except those in `have` (already in the shader).
pub(crate) fn expr_fn(expr: &Expr, signature: &str, loads: &[String], have: &[&str]) -> String {
    let mut program = Vec::new();
    expr.program(&mut program);
    program_fn(&program, signature, loads, have)
}

/// [`expr_fn`] of a program.
fn program_fn(program: &[Inst], signature: &str, loads: &[String], have: &[&str]) -> String {
    let name = signature.split('(').next().unwrap_or(signature);
    let mut helpers: Vec<&str> = Vec::new();
    let mut defs = String::new();
    let mut body = String::new();
    for (r, inst) in program.iter().enumerate() {
        let value = match *inst {
            Inst::Load(k) => loads[k].clone(),
            Inst::Unary(op, a) => {
                let helper = op.wgsl_helpers();
                if !helpers.contains(&helper) && !have.contains(&helper) {
                    helpers.push(helper);
                }
                defs += &format!("fn {name}_map{r}(x: f32) -> f32 {{ return {}; }}\n", op.wgsl());
                format!("{name}_map{r}(t{a})")
            }
            Inst::Binary(op, a, b) => {
                defs += &format!("fn {name}_map{r}(a: f32, b: f32) -> f32 {{ return {}; }}\n", op.wgsl());
                format!("{name}_map{r}(t{a}, t{b})")
            }
        };
        body += &format!("    let t{r} = {value};\n");
    }
    format!(
        "{}{defs}fn {signature} -> f32 {{\n{body}    return t{};\n}}\n",
        helpers.concat(),
        program.len() - 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(a·b + c)` through exp with a broadcast row: the CPU pass over blocks equals
    /// the maps applied one by one, bit for bit, across a block boundary.
    #[test]
    fn the_cpu_pass_equals_the_maps_one_by_one() {
        let (rows, cols) = (3, 300);
        let a = crate::rng::uniform(1, rows * cols, -1.0, 1.0);
        let b = crate::rng::uniform(2, cols, -1.0, 1.0);
        let c = crate::rng::uniform(3, rows * cols, -1.0, 1.0);
        let expr = Expr::Unary(
            UnaryOp::Exp,
            Box::new(Expr::Binary(
                BinaryOp::Add,
                Box::new(Expr::Binary(
                    BinaryOp::Mul,
                    Box::new(Expr::Input(0)),
                    Box::new(Expr::Input(1)),
                )),
                Box::new(Expr::Input(2)),
            )),
        );
        let kernel = FusedKernel::new(&expr, &[rows, cols], &[vec![cols, 1], vec![0, 1], vec![cols, 1]]);
        let mut out = vec![0.0; rows * cols];
        kernel.cpu(&[&a, &b, &c], &mut [&mut out]);
        for i in 0..rows * cols {
            let want = (a[i] * b[i % cols] + c[i]).exp();
            assert_eq!(out[i].to_bits(), want.to_bits(), "at {i}");
        }
        assert!(kernel.wgsl().defs.contains("fn fused_at"));
    }
}
