//! Matmul family (`shaders/matmul.wgsl`): `epilogue(op(A)·op(B) + bias)` where `op`
//! reads a 2-D operand transposed in place (no copy) and the epilogue is any map of
//! the elementwise table. The CPU twin is `matrixmultiply`'s sgemm.

use super::elementwise::UnaryOp;
use super::{Lowering, Op, Rule};
use crate::backend::cpu::sgemm::sgemm;
use crate::backend::kernel::{Cost, Grid, Kernel, Tune, Uniforms, Variant, Wgsl};
use crate::fast_path::{self, FastPath};
use crate::tensor::DType;
use crate::Tensor;

const SHADER: &str = include_str!("../../shaders/matmul.wgsl");

/// A GEMM node. Inputs: a, b, and bias when `bias`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMul {
    /// A is stored transposed.
    pub ta: bool,
    /// B is stored transposed.
    pub tb: bool,
    /// A bias row is added (third input).
    pub bias: bool,
    /// The map applied to each result, from the elementwise table.
    pub act: Option<UnaryOp>,
}

impl Rule for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        let k = if self.ta { inputs[0][0] } else { inputs[0][1] };
        let kernel = MatMulKernel {
            m: out[0],
            k,
            n: out[1],
            op: *self,
        };
        Lowering::kernel(kernel, 2 + self.bias as usize)
    }

    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let gp = match self.act {
            None => g.clone(),
            Some(act) => match act.grad_from_output(y, g) {
                Some(gp) => gp,
                None => {
                    // The map needs its input: recompute the GEMM without it.
                    let pre = Tensor::matmul_node(a, b, inputs.get(2), self.ta, self.tb);
                    match act.grad(&pre, y, g) {
                        Some(gp) => gp,
                        None => return vec![None; inputs.len()],
                    }
                }
            },
        };
        // With C = op(A)·op(B): dop(A) = gp·op(B)ᵀ and dop(B) = op(A)ᵀ·gp,
        // transposed back when the operand was stored transposed.
        let da = match (self.ta, self.tb) {
            (false, false) => gp.matmul_t(b, false, true),
            (false, true) => gp.matmul_t(b, false, false),
            (true, false) => b.matmul_t(&gp, false, true),
            (true, true) => b.matmul_t(&gp, true, true),
        };
        let db = match (self.ta, self.tb) {
            (false, false) => a.matmul_t(&gp, true, false),
            (false, true) => gp.matmul_t(a, true, false),
            (true, false) => a.matmul_t(&gp, false, false),
            (true, true) => gp.matmul_t(a, true, true),
        };
        let mut out = vec![Some(da), Some(db)];
        if self.bias {
            out.push(Some(gp.sum_axis(0, false)));
        }
        out
    }
}

/// reads [a, b, bias?], writes [out]
#[derive(Debug)]
struct MatMulKernel {
    m: usize,
    k: usize,
    n: usize,
    op: MatMul,
}

impl Kernel for MatMulKernel {
    fn reads(&self) -> usize {
        2 + self.op.bias as usize
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (m, n) = (self.m, self.n);
        sgemm(m, self.k, n, self.op.ta, self.op.tb, x[0], x[1], out[0]);
        let bias = if self.op.bias { Some(x[2]) } else { None };
        if bias.is_none() && self.op.act.is_none() {
            return;
        }
        epilogue_cpu(&mut out[0][..m * n], n, bias, self.op.act);
    }

    /// The default tile without a K split; the GPU backend runs [`Kernel::tune`]'s
    /// variants instead.
    fn wgsl(&self) -> Wgsl {
        self.gemm_pass(self.default_tile(), 1)
    }

    /// `2·m·n·k` (the epilogue's bias and activation not counted).
    fn cost(&self, words: &[usize]) -> Cost {
        Cost {
            flops: 2 * (self.m * self.n * self.k) as u64,
            ..Cost::moved(words)
        }
    }

    /// One variant per tile of [`TILES`], all with the same K split (chosen by shape
    /// alone, so that the bits never depend on timing); split launches add the
    /// slice-sum pass and a scratch buffer of the partial sums.
    fn tune(&self) -> Option<Tune> {
        let splits = self.splits();
        let (va, vb, vo) = self.vectors();
        // Counted here, once per launch compiled (`fast_path::taken`).
        fast_path::choose(FastPath::SplitK, splits > 1);
        fast_path::choose(FastPath::Vec4, va || vb || vo);
        let bucket = |d: usize| d.next_power_of_two();
        let key = format!(
            "matmul {}{} m{} k{} n{} v{}{}{} s{splits}",
            if self.op.ta { 't' } else { 'n' },
            if self.op.tb { 't' } else { 'n' },
            bucket(self.m),
            bucket(self.k),
            bucket(self.n),
            va as u8,
            vb as u8,
            vo as u8,
        );
        let default = self.default_tile();
        let variants = std::iter::once(default)
            .chain(TILES.into_iter().filter(|t| *t != default))
            .map(|tile| self.variant(tile, splits))
            .collect();
        Some(Tune {
            key,
            variants,
            worth_timing: 2 * self.m * self.n * self.k >= TUNE_FLOPS,
        })
    }
}

crate::backend::cpu::vmath::simd_fn! {
    /// The CPU epilogue of a product: `bias` added to every row of `n` words, then
    /// the activation.
    fn epilogue_cpu(out: &mut [f32], n: usize, bias: Option<&[f32]>, act: Option<UnaryOp>) {
        for row in out.chunks_mut(n.max(1)) {
            if let Some(bias) = bias {
                row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
            }
            if let Some(act) = act {
                act.map_in_place(row);
            }
        }
    }
}

/// A GEMM tile: `wx × wy` invocations, each computing `tm × tn` outputs (multiples of
/// 4: one vec4 per four columns), K walked in slices of `bk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    wx: usize,
    wy: usize,
    tm: usize,
    tn: usize,
    bk: usize,
}

impl Tile {
    const fn rows(self) -> usize {
        self.wy * self.tm
    }
    const fn cols(self) -> usize {
        self.wx * self.tn
    }
}

/// The tiles the GPU autotune chooses from (after [`MatMulKernel::default_tile`]):
/// 64×64 (BK 16), 128×64 and 128×128 (BK 8) for large outputs, 32×64 and 32×32 for
/// small ones, where more workgroups fill more of the GPU. Workgroup memory is at
/// most 8 KiB and 256 invocations, inside WebGPU's default limits.
const TILES: [Tile; 5] = [
    Tile {
        wx: 16,
        wy: 16,
        tm: 4,
        tn: 4,
        bk: 16,
    },
    Tile {
        wx: 16,
        wy: 16,
        tm: 8,
        tn: 4,
        bk: 8,
    },
    Tile {
        wx: 16,
        wy: 16,
        tm: 8,
        tn: 8,
        bk: 8,
    },
    Tile {
        wx: 16,
        wy: 8,
        tm: 4,
        tn: 4,
        bk: 16,
    },
    Tile {
        wx: 8,
        wy: 8,
        tm: 4,
        tn: 4,
        bk: 16,
    },
];

/// Every tile's BK divides this, so K slices of a multiple of it split whole tiles.
const SPLIT_ALIGN: usize = 16;

/// Products below this many flops are not worth timing: the default tile runs.
const TUNE_FLOPS: usize = 1 << 20;

impl MatMulKernel {
    /// The untimed choice: the largest tile that still gives the GPU enough
    /// workgroups.
    fn default_tile(&self) -> Tile {
        let outputs = self.m * self.n;
        if outputs >= 1024 * 1024 {
            TILES[2]
        } else if outputs >= 256 * 256 {
            TILES[1]
        } else if outputs >= 128 * 128 {
            TILES[0]
        } else {
            TILES[4]
        }
    }

    /// K slices for a product whose output is too small to fill a GPU (fewer than 16
    /// tiles of 64×64) but whose K is long: enough slices of at least 256 to reach
    /// about 64 workgroups. A function of the shape only.
    /// ([`FastPath::SplitK`] forced on: at least two slices where K allows; off: one.)
    fn splits(&self) -> usize {
        let tiles = self.m.div_ceil(64) * self.n.div_ceil(64);
        let auto = if tiles >= 16 || self.k < 512 {
            1
        } else {
            let want = (self.k / 256).min(64usize.div_ceil(tiles)).max(1);
            self.k.div_ceil(self.slice(want))
        };
        match fast_path::forced(FastPath::SplitK) {
            None => auto,
            Some(false) => 1,
            Some(true) => auto.max(self.k.div_ceil(self.slice(2))),
        }
    }

    /// K per slice when split `splits` ways.
    fn slice(&self, splits: usize) -> usize {
        self.k.div_ceil(splits).next_multiple_of(SPLIT_ALIGN)
    }

    /// Whether A and B can be loaded and the output stored as vec4 (their stored rows
    /// are a multiple of 4 long; buffers are bound from offset 0).
    /// ([`FastPath::Vec4`] forced off: scalar loads and stores.)
    fn vectors(&self) -> (bool, bool, bool) {
        let (m, k, n) = (self.m, self.k, self.n);
        if fast_path::forced(FastPath::Vec4) == Some(false) {
            return (false, false, false);
        }
        let va = if self.op.ta { m % 4 == 0 } else { k % 4 == 0 };
        let vb = if self.op.tb { k % 4 == 0 } else { n % 4 == 0 };
        (va, vb, n % 4 == 0)
    }

    fn variant(&self, tile: Tile, splits: usize) -> Variant {
        let mut passes = vec![self.gemm_pass(tile, splits)];
        let mut scratch = 0;
        let mut name = format!("{}x{}k{}", tile.rows(), tile.cols(), tile.bk);
        if splits > 1 {
            scratch = splits * self.m * self.n;
            name += &format!("s{splits}");
            let sum = Wgsl::new(
                SHADER,
                "matmul_split_sum",
                self.uniforms(splits),
                Grid::Threads(self.m * self.n),
            )
            .defs(self.epilogue_defs())
            .in_bounds();
            passes.push(sum);
        }
        Variant { name, passes, scratch }
    }

    fn uniforms(&self, splits: usize) -> Uniforms {
        Uniforms::new()
            .u32("m", self.m)
            .u32("k", self.k)
            .u32("n", self.n)
            .u32("kc", self.slice(splits))
            .u32("splits", splits)
    }

    /// `bias_at(c)` and `epilogue(x)`.
    fn epilogue_defs(&self) -> String {
        let mut defs = String::from(if self.op.bias {
            "fn bias_at(c: u32) -> f32 { return in2[c]; }\n"
        } else {
            "fn bias_at(c: u32) -> f32 { return 0.0; }\n"
        });
        defs += self.op.act.map_or("", UnaryOp::wgsl_helpers);
        let act = self.op.act.map_or("x".to_string(), UnaryOp::wgsl);
        defs + &format!("fn epilogue(x: f32) -> f32 {{ return {act}; }}\n")
    }

    /// The tiled product: with `splits > 1`, partial sums of each K slice into the
    /// scratch buffer (`out1`), else the finished output.
    fn gemm_pass(&self, tile: Tile, splits: usize) -> Wgsl {
        let MatMul { ta, tb, bias, .. } = self.op;
        let (va, vb, vo) = self.vectors();
        // An empty dimension counts as an edge: then nothing is loaded or stored.
        let edge_m = !self.m.is_multiple_of(tile.rows()) || self.m == 0;
        let edge_n = !self.n.is_multiple_of(tile.cols()) || self.n == 0;
        let edge_k = !self.k.is_multiple_of(tile.bk);
        let Tile { wx, wy, tm, tn, bk } = tile;
        let mut defs = format!(
            "const TA: bool = {ta};\nconst TB: bool = {tb};\nconst EDGE_K: bool = {edge_k};\n\
             const WX: u32 = {wx}u;\nconst WY: u32 = {wy}u;\nconst TM: u32 = {tm}u;\n\
             const TN: u32 = {tn}u;\nconst BK: u32 = {bk}u;\n"
        );
        // A is stored m×k (k×m when transposed), B k×n (n×k).
        let (a_rows, a_cols, a_edge) = if ta {
            ("k", "m", (edge_k, edge_m))
        } else {
            ("m", "k", (edge_m, edge_k))
        };
        let (b_rows, b_cols, b_edge) = if tb {
            ("n", "k", (edge_n, edge_k))
        } else {
            ("k", "n", (edge_k, edge_n))
        };
        defs += &loader("load_a4", "in0", va, a_rows, a_cols, a_edge);
        defs += &loader("load_b4", "in1", vb, b_rows, b_cols, b_edge);
        defs += &self.epilogue_defs();
        defs += &storer(splits > 1, vo, edge_n);
        let vec = |v: bool| if v { "vec4<f32>" } else { "f32" };
        let mut types = vec![vec(va), vec(vb)];
        if bias {
            types.push("f32");
        }
        types.push(vec(vo));
        if splits > 1 {
            types.push(vec(vo));
        }
        let grid = Grid::Tiles(self.n.div_ceil(tile.cols()), self.m.div_ceil(tile.rows()), splits);
        Wgsl::new(SHADER, "matmul", self.uniforms(splits), grid)
            .defs(defs)
            .types(types)
            .in_bounds()
    }
}

/// `fn name(row, col) -> vec4<f32>`: words col..col+4 of stored row `row` (col a
/// multiple of 4) of the `rows × cols` matrix in `binding`, zero outside it; checks
/// only the edges the shape has (`edges`: rows, cols). One vec4 load when `vector`.
fn loader(name: &str, binding: &str, vector: bool, rows: &str, cols: &str, edges: (bool, bool)) -> String {
    let row_out = if edges.0 {
        format!("row >= params.{rows}")
    } else {
        "false".into()
    };
    if vector {
        let col_out = if edges.1 {
            format!("col >= params.{cols}")
        } else {
            "false".into()
        };
        format!(
            "fn {name}(row: u32, col: u32) -> vec4<f32> {{\n\
             \x20   if ({row_out} || {col_out}) {{ return vec4<f32>(); }}\n\
             \x20   return {binding}[(row * params.{cols} + col) / 4u];\n}}\n"
        )
    } else {
        let col_in = if edges.1 {
            format!("col + e < params.{cols}")
        } else {
            "true".into()
        };
        format!(
            "fn {name}(row: u32, col: u32) -> vec4<f32> {{\n\
             \x20   var v = vec4<f32>();\n\
             \x20   if ({row_out}) {{ return v; }}\n\
             \x20   for (var e = 0u; e < 4u; e++) {{\n\
             \x20       if ({col_in}) {{ v[e] = {binding}[row * params.{cols} + col + e]; }}\n\
             \x20   }}\n\
             \x20   return v;\n}}\n"
        )
    }
}

/// `fn store4(r, c, z, v)`: results r, c..c+4 (c a multiple of 4; those past n
/// dropped): finished (bias, epilogue) into `out0`, or split-K's raw partial sums of
/// slice z into `out1`; one vec4 store when `vector`.
fn storer(split: bool, vector: bool, edge_n: bool) -> String {
    let head = "fn store4(r: u32, c: u32, z: u32, v: vec4<f32>) {\n";
    match (split, vector) {
        (false, true) => format!(
            "{head}{}    let x = v + vec4<f32>(bias_at(c), bias_at(c + 1u), bias_at(c + 2u), bias_at(c + 3u));\n\
             \x20   out0[(r * params.n + c) / 4u] = vec4<f32>(epilogue(x.x), epilogue(x.y), epilogue(x.z), epilogue(x.w));\n}}\n",
            if edge_n { "    if (c >= params.n) { return; }\n" } else { "" }
        ),
        (false, false) => format!(
            "{head}    for (var e = 0u; e < 4u; e++) {{\n\
             \x20       if (c + e < params.n) {{ out0[r * params.n + c + e] = epilogue(v[e] + bias_at(c + e)); }}\n\
             \x20   }}\n}}\n"
        ),
        (true, true) => format!(
            "{head}{}    out1[(z * params.m * params.n + r * params.n + c) / 4u] = v;\n}}\n",
            if edge_n { "    if (c >= params.n) { return; }\n" } else { "" }
        ),
        (true, false) => format!(
            "{head}    for (var e = 0u; e < 4u; e++) {{\n\
             \x20       if (c + e < params.n) {{ out1[z * params.m * params.n + r * params.n + c + e] = v[e]; }}\n\
             \x20   }}\n}}\n"
        ),
    }
}

impl Tensor {
    /// Matrix product of 2-D tensors `[m, k] · [k, n]`. A transposed operand
    /// (`x.t()`) is read in place, never copied.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        self.matmul_t(other, false, false)
    }

    /// `op(self) · op(other)` where `op` transposes a 2-D operand when its flag is set.
    #[track_caller]
    pub fn matmul_t(&self, other: &Tensor, ta: bool, tb: bool) -> Tensor {
        Tensor::matmul_node(self, other, None, ta, tb)
    }

    /// `x · wᵀ + b`, PyTorch's `nn.Linear` with weight `[out, in]`, as one fused kernel.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        Tensor::matmul_node(self, weight, bias, false, true)
    }

    #[track_caller]
    fn matmul_node(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, ta: bool, tb: bool) -> Tensor {
        a.check_f32("matmul");
        b.check_f32("matmul");
        a.check_same_device(b, "matmul");
        assert!(
            a.shape().len() == 2 && b.shape().len() == 2,
            "matmul: expects 2-D operands, got {:?} and {:?}",
            a.shape(),
            b.shape()
        );
        // Fold explicit transposes into the kernel's flags.
        let (a, ta) = a.untransposed(ta);
        let (b, tb) = b.untransposed(tb);
        let (m, ka) = if ta {
            (a.shape()[1], a.shape()[0])
        } else {
            (a.shape()[0], a.shape()[1])
        };
        let (kb, n) = if tb {
            (b.shape()[1], b.shape()[0])
        } else {
            (b.shape()[0], b.shape()[1])
        };
        assert!(
            ka == kb,
            "matmul: inner dimensions differ: {:?}{} · {:?}{}",
            a.shape(),
            if ta { "ᵀ" } else { "" },
            b.shape(),
            if tb { "ᵀ" } else { "" }
        );
        let mut inputs = vec![a, b];
        if let Some(bias) = bias {
            assert!(
                bias.shape() == [n],
                "linear: bias shape {:?} does not match output features [{n}]",
                bias.shape()
            );
            inputs.push(bias.clone());
        }
        let op = MatMul {
            ta,
            tb,
            bias: bias.is_some(),
            act: None,
        };
        Tensor::from_node(Op::MatMul(op), inputs, vec![m, n], DType::F32)
    }

    fn untransposed(&self, flag: bool) -> (Tensor, bool) {
        match &self.0.op {
            Op::Permute(p) if p.0 == [1, 0] => (self.0.inputs[0].clone(), !flag),
            _ => (self.clone(), flag),
        }
    }

    /// This unrealized matmul with `act` as its epilogue, when it has none yet (built
    /// where the activation was asked for).
    #[track_caller]
    pub(crate) fn with_epilogue(&self, act: UnaryOp) -> Option<Tensor> {
        let Op::MatMul(op @ MatMul { act: None, .. }) = self.0.op else {
            return None;
        };
        if self.0.storage.lock().unwrap().is_some() {
            return None;
        }
        let fused = Op::MatMul(MatMul { act: Some(act), ..op });
        Some(Tensor::from_node(
            fused,
            self.0.inputs.clone(),
            self.shape().to_vec(),
            DType::F32,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    #[test]
    fn an_epilogue_whose_gradient_needs_its_input_matches_the_unfused_graph() {
        let dev = Device::cpu();
        let leaf = |shape: &[usize], seed| Tensor::randn(shape, seed, &dev).unwrap().requires_grad().unwrap();
        let (a, b, bias) = (leaf(&[3, 4], 1), leaf(&[5, 4], 2), leaf(&[5], 3));
        let op = MatMul {
            ta: false,
            tb: true,
            bias: true,
            act: Some(UnaryOp::Gelu),
        };
        let inputs = vec![a.clone(), b.clone(), bias.clone()];
        let fused = Tensor::from_node(Op::MatMul(op), inputs, vec![3, 5], DType::F32);
        let plain = a.linear(&b, Some(&bias)).gelu();
        let (gf, gp) = (fused.sum().backward().unwrap(), plain.sum().backward().unwrap());
        assert_eq!(fused.to_vec().unwrap(), plain.to_vec().unwrap());
        for t in [&a, &b, &bias] {
            let (f, p) = (
                gf.get(t).unwrap().to_vec().unwrap(),
                gp.get(t).unwrap().to_vec().unwrap(),
            );
            assert!(f.iter().zip(&p).all(|(x, y)| (x - y).abs() < 1e-5), "{f:?} vs {p:?}");
        }
    }
}
