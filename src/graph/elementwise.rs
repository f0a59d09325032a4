//! The elementwise op table: every unary and binary map, with its CPU function, its
//! WGSL expression (filled into `shaders/elementwise.wgsl`) and its gradient rule,
//! side by side. Adding an elementwise op touches this file only.

use crate::Tensor;

/// A one-input map. Scalar parameters are part of the op (and of the plan's cache key).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sigmoid,
    Tanh,
    Relu,
    /// Heaviside step: 1 where x > 0, else 0.
    Step,
    Abs,
    /// -1, 0 or 1.
    Sign,
    Sqrt,
    Square,
    Recip,
    AddScalar(f32),
    MulScalar(f32),
    /// x^p for a constant p (x > 0 where p is not an integer).
    PowScalar(f32),
}

/// A two-input map with NumPy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// The larger of the two.
    Maximum,
    /// 1 where a == b, else 0 (no gradient).
    Eq,
    /// 1 where a > b, else 0 (no gradient).
    Gt,
}

/// WGSL source of an f32 constant, exact to the bit.
pub(crate) fn wgsl_f32(v: f32) -> String {
    format!("bitcast<f32>({:#010x}u)", v.to_bits())
}

impl UnaryOp {
    /// The CPU reference of the map.
    #[inline]
    pub fn cpu(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
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
        }
    }

    /// The WGSL expression of the map, in terms of `x`.
    pub fn wgsl(self) -> String {
        match self {
            UnaryOp::Neg => "-x".into(),
            UnaryOp::Exp => "exp(x)".into(),
            UnaryOp::Log => "log(x)".into(),
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
        }
    }

    /// Gradient with respect to the input `x`, given the output `y` and the incoming
    /// gradient `g`; `None` where the map is flat almost everywhere.
    pub fn grad(self, x: &Tensor, y: &Tensor, g: &Tensor) -> Option<Tensor> {
        Some(match self {
            UnaryOp::Neg => g.neg(),
            UnaryOp::Exp => g * y,
            UnaryOp::Log => g / x,
            UnaryOp::Sigmoid => g * &(y * &y.neg().add_scalar(1.0)),
            UnaryOp::Tanh => g * &y.square().neg().add_scalar(1.0),
            UnaryOp::Relu => g * &x.step(),
            UnaryOp::Abs => g * &x.sign(),
            UnaryOp::Sqrt => g / &y.mul_scalar(2.0),
            UnaryOp::Square => g * &x.mul_scalar(2.0),
            UnaryOp::Recip => (g * &y.square()).neg(),
            UnaryOp::AddScalar(_) => g.clone(),
            UnaryOp::MulScalar(c) => g.mul_scalar(c),
            UnaryOp::PowScalar(p) => g * &x.pow_scalar(p - 1.0).mul_scalar(p),
            UnaryOp::Step | UnaryOp::Sign => return None,
        })
    }
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
