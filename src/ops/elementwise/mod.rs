//! Elementwise family (`shaders/elementwise.wgsl`): the table of unary and binary
//! maps — each with its CPU function, its WGSL expression (filled into one kernel
//! template), its gradient and its `Tensor` method, side by side — plus constant
//! fills and one-hot rows. Adding a map touches this file only.

use std::sync::Arc;

use super::{broadcast_strides, simplify, Lowering, Op, Rule};
use crate::backend::cpu::vmath;
use crate::backend::kernel::{wgsl_f32, Grid, Kernel, Uniforms, Wgsl, MAX_RANK};
use crate::tensor::DType;
use crate::Tensor;

mod builders;

const SHADER: &str = include_str!("../../../shaders/elementwise.wgsl");

/// A loop that applies a one-input map, handed to it by [`UnaryOp::each`] as a
/// closure of the map's own type.
pub(crate) trait UnaryLoop {
    /// Runs the loop with `f` as the map.
    fn run(self, f: impl Fn(f32) -> f32);
}

/// A loop that applies a two-input map, handed to it by [`BinaryOp::each`].
pub(crate) trait BinaryLoop {
    /// Runs the loop with `f` as the map.
    fn run(self, f: impl Fn(f32, f32) -> f32);
}

/// A one-input map. Scalar parameters are part of the op (and of the plan's cache key).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// Natural logarithm.
    Log,
    /// `ln(1 + x)`, exact for small x (where `(1 + x).ln()` loses x's low bits).
    Log1p,
    /// Logistic function `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `max(x, 0)`
    Relu,
    /// Heaviside step: 1 where x > 0, else 0.
    Step,
    /// `|x|`
    Abs,
    /// -1, 0 or 1.
    Sign,
    /// Square root.
    Sqrt,
    /// `x²`
    Square,
    /// `1 / x`
    Recip,
    /// `x + c`
    AddScalar(f32),
    /// `x · c`
    MulScalar(f32),
    /// `x^p` for a constant p (x > 0 where p is not an integer).
    PowScalar(f32),
    /// The error function (`torch.erf`).
    Erf,
    /// GELU, `x · Φ(x)` with the exact normal CDF (`nn.GELU()`).
    Gelu,
    /// GELU with PyTorch's tanh approximation (`nn.GELU(approximate='tanh')`).
    GeluTanh,
    /// 1 where x is an infinity or a NaN (its exponent bits all set), else 0: read
    /// from the bits, so shader compilers that assume finite math cannot fold it.
    NonFinite,
}

/// √(2/π), the tanh-GELU's scale.
const GELU_TANH_K: f32 = 0.797_884_6;
/// The tanh-GELU's cubic coefficient.
const GELU_TANH_C: f32 = 0.044_715;

impl UnaryOp {
    /// The CPU reference of the map.
    #[inline]
    pub fn cpu(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Log1p => x.ln_1p(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Step => (x > 0.0) as u32 as f32,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Square => x * x,
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::AddScalar(c) => x + c,
            UnaryOp::MulScalar(c) => x * c,
            UnaryOp::PowScalar(p) => x.powf(p),
            UnaryOp::Erf => erf(x),
            UnaryOp::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            UnaryOp::GeluTanh => 0.5 * x * (1.0 + (GELU_TANH_K * (x + GELU_TANH_C * x * x * x)).tanh()),
            UnaryOp::NonFinite => (x.to_bits() & 0x7f80_0000 == 0x7f80_0000) as u32 as f32,
        }
    }

    /// Runs `each` with this map as a closure of its own type, so that the loop inside
    /// is compiled (and vectorized) per map: the `match` is decided once per call,
    /// not per element. Same bits as [`UnaryOp::cpu`] element by element.
    #[inline(always)]
    pub(crate) fn each(self, each: impl UnaryLoop) {
        use UnaryOp::*;
        match self {
            Neg => each.run(|x| Neg.cpu(x)),
            Exp => each.run(|x| Exp.cpu(x)),
            Log => each.run(|x| Log.cpu(x)),
            Log1p => each.run(|x| Log1p.cpu(x)),
            Sigmoid => each.run(|x| Sigmoid.cpu(x)),
            Tanh => each.run(|x| Tanh.cpu(x)),
            Relu => each.run(|x| Relu.cpu(x)),
            Step => each.run(|x| Step.cpu(x)),
            Abs => each.run(|x| Abs.cpu(x)),
            Sign => each.run(|x| Sign.cpu(x)),
            Sqrt => each.run(|x| Sqrt.cpu(x)),
            Square => each.run(|x| Square.cpu(x)),
            Recip => each.run(|x| Recip.cpu(x)),
            AddScalar(c) => each.run(move |x| AddScalar(c).cpu(x)),
            MulScalar(c) => each.run(move |x| MulScalar(c).cpu(x)),
            PowScalar(p) => each.run(move |x| PowScalar(p).cpu(x)),
            Erf => each.run(|x| Erf.cpu(x)),
            Gelu => each.run(|x| Gelu.cpu(x)),
            GeluTanh => each.run(|x| GeluTanh.cpu(x)),
            NonFinite => each.run(|x| NonFinite.cpu(x)),
        }
    }

    /// `dst[i] = map(src[i])` over the shorter of the two.
    #[inline(always)]
    pub(crate) fn map_slice(self, src: &[f32], dst: &mut [f32]) {
        struct Slices<'a>(&'a [f32], &'a mut [f32]);
        impl UnaryLoop for Slices<'_> {
            #[inline(always)]
            fn run(self, f: impl Fn(f32) -> f32) {
                self.1.iter_mut().zip(self.0).for_each(|(d, &s)| *d = f(s));
            }
        }
        self.each(Slices(src, dst));
    }

    /// `v[i] = map(v[i])`.
    #[inline(always)]
    pub(crate) fn map_in_place(self, v: &mut [f32]) {
        struct InPlace<'a>(&'a mut [f32]);
        impl UnaryLoop for InPlace<'_> {
            #[inline(always)]
            fn run(self, f: impl Fn(f32) -> f32) {
                self.0.iter_mut().for_each(|v| *v = f(*v));
            }
        }
        self.each(InPlace(v));
    }

    /// The WGSL expression of the map, in terms of `x` (helpers in common.wgsl).
    pub fn wgsl(self) -> String {
        match self {
            UnaryOp::Neg => "-x".into(),
            UnaryOp::Exp => "exp(x)".into(),
            UnaryOp::Log => "log(x)".into(),
            UnaryOp::Log1p => "log1p_f(x)".into(),
            UnaryOp::Sigmoid => "sigmoid_f(x)".into(),
            UnaryOp::Tanh => "tanh_f(x)".into(),
            UnaryOp::Relu => "max(x, 0.0)".into(),
            UnaryOp::Step => "select(0.0, 1.0, x > 0.0)".into(),
            UnaryOp::Abs => "abs(x)".into(),
            UnaryOp::Sign => "sign(x)".into(),
            UnaryOp::Sqrt => "sqrt(x)".into(),
            UnaryOp::Square => "x * x".into(),
            UnaryOp::Recip => "1.0 / x".into(),
            UnaryOp::AddScalar(c) => format!("x + {}", wgsl_f32(c)),
            UnaryOp::MulScalar(c) => format!("x * {}", wgsl_f32(c)),
            UnaryOp::PowScalar(p) => format!("pow_f(x, {})", wgsl_f32(p)),
            UnaryOp::Erf => "erf_f(x)".into(),
            UnaryOp::Gelu => "0.5 * x * (1.0 + erf_f(x * 0.70710678118654752))".into(),
            UnaryOp::GeluTanh => format!(
                "0.5 * x * (1.0 + tanh_f({} * (x + {} * x * x * x)))",
                wgsl_f32(GELU_TANH_K),
                wgsl_f32(GELU_TANH_C)
            ),
            UnaryOp::NonFinite => "select(0.0, 1.0, (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u)".into(),
        }
    }

    /// WGSL functions the expression calls beyond common.wgsl, emitted before it.
    pub(crate) fn wgsl_helpers(self) -> &'static str {
        match self {
            UnaryOp::Erf | UnaryOp::Gelu => ERF_WGSL,
            _ => "",
        }
    }

    /// Activations whose gradient is a function of their output: an unrealized matmul
    /// takes them into its epilogue (the pre-activation is never stored).
    pub(crate) fn fuses_into_matmul(self) -> bool {
        matches!(self, UnaryOp::Relu | UnaryOp::Sigmoid | UnaryOp::Tanh)
    }

    /// The gradient written from the output `y` alone, where the map allows it.
    pub(crate) fn grad_from_output(self, y: &Tensor, g: &Tensor) -> Option<Tensor> {
        Some(match self {
            UnaryOp::Neg => g.neg(),
            UnaryOp::Exp => g * y,
            UnaryOp::Sigmoid => g * &(y * &y.neg().add_scalar(1.0)),
            UnaryOp::Tanh => g * &y.square().neg().add_scalar(1.0),
            UnaryOp::Relu => g * &y.step(),
            UnaryOp::Sqrt => g / &y.mul_scalar(2.0),
            UnaryOp::Recip => (g * &y.square()).neg(),
            UnaryOp::AddScalar(_) => g.clone(),
            UnaryOp::MulScalar(c) => g.mul_scalar(c),
            _ => return None,
        })
    }

    /// Gradient with respect to the input `x`, given the output `y` and the incoming
    /// gradient `g`; `None` where the map is flat almost everywhere.
    pub fn grad(self, x: &Tensor, y: &Tensor, g: &Tensor) -> Option<Tensor> {
        if let Some(grad) = self.grad_from_output(y, g) {
            return Some(grad);
        }
        Some(match self {
            UnaryOp::Log => g / x,
            UnaryOp::Log1p => g / &x.add_scalar(1.0),
            UnaryOp::Abs => g * &x.sign(),
            UnaryOp::Square => g * &x.mul_scalar(2.0),
            UnaryOp::PowScalar(p) => g * &x.pow_scalar(p - 1.0).mul_scalar(p),
            // 2/√π · e^(-x²)
            UnaryOp::Erf => g * &x.square().neg().exp().mul_scalar(std::f32::consts::FRAC_2_SQRT_PI),
            // Φ(x) + x·φ(x)
            UnaryOp::Gelu => {
                let cdf = x
                    .mul_scalar(std::f32::consts::FRAC_1_SQRT_2)
                    .erf()
                    .add_scalar(1.0)
                    .mul_scalar(0.5);
                let pdf = x.square().mul_scalar(-0.5).exp().mul_scalar(0.398_942_3);
                g * &(&cdf + &(x * &pdf))
            }
            // ½(1 + t) + ½x(1 − t²)·k(1 + 3c·x²), t = tanh(k(x + c·x³))
            UnaryOp::GeluTanh => {
                let inner = (x + &x.pow_scalar(3.0).mul_scalar(GELU_TANH_C)).mul_scalar(GELU_TANH_K);
                let t = inner.tanh();
                let dinner = x
                    .square()
                    .mul_scalar(3.0 * GELU_TANH_C * GELU_TANH_K)
                    .add_scalar(GELU_TANH_K);
                let left = t.add_scalar(1.0).mul_scalar(0.5);
                let right = &(x * &t.square().neg().add_scalar(1.0)) * &dinner.mul_scalar(0.5);
                g * &(&left + &right)
            }
            _ => return None,
        })
    }
}

impl Rule for UnaryOp {
    fn name(&self) -> &'static str {
        "unary"
    }
    fn lower(&self, _: &[&[usize]], out: &[usize]) -> Lowering {
        Lowering::kernel(
            UnaryKernel {
                op: *self,
                n: out.iter().product(),
            },
            1,
        )
    }
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![self.grad(&inputs[0], y, g)]
    }
}

/// A two-input map with NumPy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
    /// The larger of the two.
    Maximum,
    /// 1 where a == b, else 0 (no gradient).
    Eq,
    /// 1 where a > b, else 0 (no gradient).
    Gt,
}

impl BinaryOp {
    /// The CPU reference of the map.
    #[inline]
    pub fn cpu(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Maximum => a.max(b),
            BinaryOp::Eq => (a == b) as u32 as f32,
            BinaryOp::Gt => (a > b) as u32 as f32,
        }
    }

    /// Runs `each` with this map as a closure of its own type (see [`UnaryOp::each`]).
    #[inline(always)]
    pub(crate) fn each(self, each: impl BinaryLoop) {
        use BinaryOp::*;
        match self {
            Add => each.run(|a, b| Add.cpu(a, b)),
            Sub => each.run(|a, b| Sub.cpu(a, b)),
            Mul => each.run(|a, b| Mul.cpu(a, b)),
            Div => each.run(|a, b| Div.cpu(a, b)),
            Maximum => each.run(|a, b| Maximum.cpu(a, b)),
            Eq => each.run(|a, b| Eq.cpu(a, b)),
            Gt => each.run(|a, b| Gt.cpu(a, b)),
        }
    }

    /// `dst[i] = map(a[i], b[i])` over the shortest of the three.
    #[inline(always)]
    pub(crate) fn map_slices(self, a: &[f32], b: &[f32], dst: &mut [f32]) {
        struct Slices<'a>(&'a [f32], &'a [f32], &'a mut [f32]);
        impl BinaryLoop for Slices<'_> {
            #[inline(always)]
            fn run(self, f: impl Fn(f32, f32) -> f32) {
                let Slices(a, b, dst) = self;
                dst.iter_mut().zip(a).zip(b).for_each(|((d, &a), &b)| *d = f(a, b));
            }
        }
        self.each(Slices(a, b, dst));
    }

    /// The WGSL expression of the map, in terms of `a` and `b`.
    pub fn wgsl(self) -> &'static str {
        match self {
            BinaryOp::Add => "a + b",
            BinaryOp::Sub => "a - b",
            BinaryOp::Mul => "a * b",
            BinaryOp::Div => "a / b",
            BinaryOp::Maximum => "max(a, b)",
            BinaryOp::Eq => "select(0.0, 1.0, a == b)",
            BinaryOp::Gt => "select(0.0, 1.0, a > b)",
        }
    }

    /// Gradients with respect to `a` and `b` (before summing over broadcast axes).
    pub fn grad(self, a: &Tensor, b: &Tensor, y: &Tensor, g: &Tensor) -> [Option<Tensor>; 2] {
        match self {
            BinaryOp::Add => [Some(g.clone()), Some(g.clone())],
            BinaryOp::Sub => [Some(g.clone()), Some(g.neg())],
            BinaryOp::Mul => [Some(g * b), Some(g * a)],
            BinaryOp::Div => [Some(g / b), Some((&(g * y) / b).neg())],
            BinaryOp::Maximum => {
                let pick_a = a.ge_mask(b);
                [Some(g * &pick_a), Some(g * &pick_a.neg().add_scalar(1.0))]
            }
            BinaryOp::Eq | BinaryOp::Gt => [None, None],
        }
    }
}

impl Rule for BinaryOp {
    fn name(&self) -> &'static str {
        "binary"
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        let a = broadcast_strides(inputs[0], out);
        let b = broadcast_strides(inputs[1], out);
        let (shape, mut s) = simplify(out, &[&a, &b]);
        let b_strides = s.pop().unwrap();
        let a_strides = s.pop().unwrap();
        Lowering::kernel(
            BinaryKernel {
                op: *self,
                shape,
                a_strides,
                b_strides,
            },
            2,
        )
    }
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let [ga, gb] = self.grad(&inputs[0], &inputs[1], y, g);
        vec![
            ga.map(|t| t.sum_to_shape(inputs[0].shape())),
            gb.map(|t| t.sum_to_shape(inputs[1].shape())),
        ]
    }
}

/// A constant generated on the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fill(pub f32);

impl Rule for Fill {
    fn name(&self) -> &'static str {
        "fill"
    }
    fn lower(&self, _: &[&[usize]], out: &[usize]) -> Lowering {
        Lowering::kernel(
            FillKernel {
                n: out.iter().product(),
                value: self.0,
            },
            0,
        )
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        Vec::new()
    }
}

/// u32 labels `[n]` to f32 rows `[n, classes]` with a 1 at the label (a label not
/// below `classes` gives a row of zeros). Used for device-side confusion matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OneHot {
    /// Row length.
    pub classes: usize,
}

impl Rule for OneHot {
    fn name(&self) -> &'static str {
        "one_hot"
    }
    fn lower(&self, _: &[&[usize]], out: &[usize]) -> Lowering {
        Lowering::kernel(
            OneHotKernel {
                n: out.iter().product(),
                classes: self.classes,
            },
            1,
        )
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None]
    }
}

/// A launch writing `words` zeros: the zeros around a pad written in place
/// (`graph/joins.rs`).
pub(crate) fn zero_fill(words: usize) -> Arc<dyn Kernel> {
    Arc::new(FillKernel { n: words, value: 0.0 })
}

/// writes [out]
#[derive(Debug)]
struct FillKernel {
    n: usize,
    value: f32,
}

impl Kernel for FillKernel {
    fn reads(&self) -> usize {
        0
    }
    fn cpu(&self, _: &[&[f32]], out: &mut [&mut [f32]]) {
        out[0][..self.n].fill(self.value);
    }
    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new().u32("n", self.n).f32("value", self.value);
        Wgsl::new(SHADER, "fill", u, Grid::Threads(self.n))
    }
}

/// reads [x], writes [out]
#[derive(Debug)]
struct UnaryKernel {
    op: UnaryOp,
    n: usize,
}

impl Kernel for UnaryKernel {
    fn reads(&self) -> usize {
        1
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        unary_cpu(self.op, &x[0][..self.n], &mut out[0][..self.n]);
    }
    fn wgsl(&self) -> Wgsl {
        Wgsl::new(SHADER, "unary", Uniforms::new().u32("n", self.n), Grid::Threads(self.n))
            .defs(self.op.wgsl_helpers())
            .defs(format!("fn unary_op(x: f32) -> f32 {{ return {}; }}\n", self.op.wgsl()))
    }
}

/// reads [a, b], writes [out]; strides are 0 along broadcast axes.
#[derive(Debug)]
struct BinaryKernel {
    op: BinaryOp,
    shape: Vec<usize>,
    a_strides: Vec<usize>,
    b_strides: Vec<usize>,
}

impl Kernel for BinaryKernel {
    fn reads(&self) -> usize {
        2
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let rows = BinaryRows {
            kernel: self,
            a: x[0],
            b: x[1],
            out: &mut *out[0],
        };
        binary_cpu(rows);
    }
    fn wgsl(&self) -> Wgsl {
        let n: usize = self.shape.iter().product();
        debug_assert!(self.shape.len() <= MAX_RANK);
        let u = Uniforms::new()
            .u32("n", n)
            .u32("rank", self.shape.len())
            .dims("shape", &self.shape)
            .dims("a_strides", &self.a_strides)
            .dims("b_strides", &self.b_strides);
        Wgsl::new(SHADER, "binary", u, Grid::Threads(n)).defs(format!(
            "fn binary_op(a: f32, b: f32) -> f32 {{ return {}; }}\n",
            self.op.wgsl()
        ))
    }
}

vmath::simd_fn! {
    /// [`UnaryKernel`]'s CPU loop.
    fn unary_cpu(op: UnaryOp, x: &[f32], out: &mut [f32]) {
        op.map_slice(x, out)
    }
}

vmath::simd_fn! {
    /// [`BinaryKernel`]'s CPU loop.
    fn binary_cpu(rows: BinaryRows<'_>) {
        rows.kernel.op.each(rows)
    }
}

/// [`BinaryKernel`]'s CPU loop: rows along the last axis (contiguous or broadcast
/// there), an odometer over the outer axes.
struct BinaryRows<'a> {
    kernel: &'a BinaryKernel,
    a: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
}

impl BinaryLoop for BinaryRows<'_> {
    #[inline(always)]
    fn run(self, f: impl Fn(f32, f32) -> f32) {
        let BinaryKernel {
            shape,
            a_strides: sa,
            b_strides: sb,
            ..
        } = self.kernel;
        let (a, b, out) = (self.a, self.b, self.out);
        let n: usize = shape.iter().product();
        let last = shape.len() - 1;
        let (len, la, lb) = (shape[last], sa[last], sb[last]);
        let mut idx = vec![0usize; shape.len()];
        let (mut ia, mut ib, mut o) = (0usize, 0usize, 0usize);
        while o < n {
            let row = &mut out[o..o + len];
            match (la, lb) {
                (1, 1) => {
                    for ((r, &x), &y) in row.iter_mut().zip(&a[ia..ia + len]).zip(&b[ib..ib + len]) {
                        *r = f(x, y);
                    }
                }
                (1, 0) => {
                    let y = b[ib];
                    for (r, &x) in row.iter_mut().zip(&a[ia..ia + len]) {
                        *r = f(x, y);
                    }
                }
                (0, 1) => {
                    let x = a[ia];
                    for (r, &y) in row.iter_mut().zip(&b[ib..ib + len]) {
                        *r = f(x, y);
                    }
                }
                _ => {
                    for (j, r) in row.iter_mut().enumerate() {
                        *r = f(a[ia + j * la], b[ib + j * lb]);
                    }
                }
            }
            o += len;
            // Odometer over the outer axes.
            for d in (0..last).rev() {
                idx[d] += 1;
                ia += sa[d];
                ib += sb[d];
                if idx[d] < shape[d] {
                    break;
                }
                ia -= sa[d] * shape[d];
                ib -= sb[d] * shape[d];
                idx[d] = 0;
            }
        }
    }
}

/// reads [labels], writes [out] of `n` = rows · classes words
#[derive(Debug)]
struct OneHotKernel {
    n: usize,
    classes: usize,
}

impl Kernel for OneHotKernel {
    fn reads(&self) -> usize {
        1
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        for (i, o) in out[0][..self.n].iter_mut().enumerate() {
            *o = (x[0][i / self.classes].to_bits() as usize == i % self.classes) as u32 as f32;
        }
    }
    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new().u32("n", self.n).u32("classes", self.classes);
        Wgsl::new(SHADER, "one_hot", u, Grid::Threads(self.n))
    }
}

/// Numerically stable logistic function, shared by the CPU kernels.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `erf_f`: the WGSL twin of [`erf`], the same evaluation step by step.
const ERF_WGSL: &str = "
fn erf_f(x: f32) -> f32 {
    let c = clamp(x, -4.0, 4.0);
    let x2 = c * c;
    var p = -2.7261424e-10;
    p = p * x2 + 2.7706815e-8;
    p = p * x2 - 2.101024e-6;
    p = p * x2 - 5.6925062e-5;
    p = p * x2 - 7.3499064e-4;
    p = p * x2 - 2.9546e-3;
    p = p * x2 - 1.6096033e-2;
    var q = -1.45660715e-5;
    q = q * x2 - 2.1337405e-4;
    q = q * x2 - 1.682827e-3;
    q = q * x2 - 7.3733293e-3;
    q = q * x2 - 1.4264739e-2;
    return c * p / q;
}
";

/// erf as a rational function of x² on [-4, 4] (XLA's f32 erf, |error| < 1e-7), the
/// same evaluation as `erf_f` on the GPU.
#[inline]
pub fn erf(x: f32) -> f32 {
    let c = x.clamp(-4.0, 4.0);
    let x2 = c * c;
    let p = [
        -2.7261424e-10,
        2.7706815e-8,
        -2.101024e-6,
        -5.6925062e-5,
        -7.3499064e-4,
        -2.9546e-3,
        -1.6096033e-2,
    ]
    .iter()
    .fold(0.0f32, |acc, &k| acc * x2 + k);
    let q = [
        -1.45660715e-5,
        -2.1337405e-4,
        -1.682827e-3,
        -7.3733293e-3,
        -1.4264739e-2,
    ]
    .iter()
    .fold(0.0f32, |acc, &k| acc * x2 + k);
    c * p / q
}
