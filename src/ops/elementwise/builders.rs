//! The elementwise family's `Tensor` methods — maps, binary ops with broadcasting,
//! scalar ops, fills — and the `+ - * /` and negation operators on tensors and `f32`s.

use super::*;

impl Tensor {
    /// An elementwise map of this tensor. Activations that can (see
    /// [`UnaryOp::fuses_into_matmul`]) join an unrealized matmul's epilogue instead.
    #[track_caller]
    pub(crate) fn unary(&self, op: UnaryOp) -> Tensor {
        self.check_f32("unary op");
        if op.fuses_into_matmul() {
            if let Some(fused) = self.with_epilogue(op) {
                return fused;
            }
        }
        Tensor::from_node(Op::Unary(op), vec![self.clone()], self.shape().to_vec(), DType::F32)
    }

    #[track_caller]
    fn binary(&self, other: &Tensor, op: BinaryOp) -> Tensor {
        self.check_f32("binary op");
        other.check_f32("binary op");
        self.check_same_device(other, "binary op");
        let shape = crate::ops::broadcast_shapes(self.shape(), other.shape()).unwrap_or_else(|| {
            panic!(
                "{op:?}: shapes {:?} and {:?} do not broadcast",
                self.shape(),
                other.shape()
            )
        });
        Tensor::from_node(Op::Binary(op), vec![self.clone(), other.clone()], shape, DType::F32)
    }

    /// `-x`
    #[track_caller]
    pub fn neg(&self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
    /// `e^x`
    #[track_caller]
    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    #[track_caller]
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    /// `ln(1 + x)`, accurate for small x (`torch.log1p`).
    pub fn log1p(&self) -> Tensor {
        self.unary(UnaryOp::Log1p)
    }
    /// Logistic function `1 / (1 + e^-x)`.
    #[track_caller]
    pub fn sigmoid(&self) -> Tensor {
        self.unary(UnaryOp::Sigmoid)
    }
    /// Hyperbolic tangent.
    #[track_caller]
    pub fn tanh(&self) -> Tensor {
        self.unary(UnaryOp::Tanh)
    }
    /// `max(x, 0)`
    #[track_caller]
    pub fn relu(&self) -> Tensor {
        self.unary(UnaryOp::Relu)
    }
    /// Heaviside step: 1 where x > 0, else 0 (zero gradient).
    #[track_caller]
    pub fn step(&self) -> Tensor {
        self.unary(UnaryOp::Step)
    }
    /// `|x|`
    #[track_caller]
    pub fn abs(&self) -> Tensor {
        self.unary(UnaryOp::Abs)
    }
    /// -1, 0 or 1 (zero gradient).
    #[track_caller]
    pub fn sign(&self) -> Tensor {
        self.unary(UnaryOp::Sign)
    }
    /// 1 where the value is an infinity or a NaN, else 0 (from the bits; zero
    /// gradient): `non_finite().sum()` counts them, e.g. to skip an overflowing step.
    #[track_caller]
    pub fn non_finite(&self) -> Tensor {
        self.unary(UnaryOp::NonFinite)
    }
    /// Square root.
    #[track_caller]
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    /// `x²`
    #[track_caller]
    pub fn square(&self) -> Tensor {
        self.unary(UnaryOp::Square)
    }
    /// `1 / x`
    #[track_caller]
    pub fn recip(&self) -> Tensor {
        self.unary(UnaryOp::Recip)
    }
    /// `x + c`
    #[track_caller]
    pub fn add_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::AddScalar(c))
    }
    /// `x · c`
    #[track_caller]
    pub fn mul_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::MulScalar(c))
    }
    /// `x^p`
    #[track_caller]
    pub fn pow_scalar(&self, p: f32) -> Tensor {
        self.unary(UnaryOp::PowScalar(p))
    }
    /// The error function, as `torch.erf` (f32, |error| < 1e-7).
    #[track_caller]
    pub fn erf(&self) -> Tensor {
        self.unary(UnaryOp::Erf)
    }
    /// GELU `x · Φ(x)` with the exact normal CDF, as PyTorch's `F.gelu(x)`.
    #[track_caller]
    pub fn gelu(&self) -> Tensor {
        self.unary(UnaryOp::Gelu)
    }
    /// GELU with the tanh approximation, as PyTorch's `F.gelu(x, approximate='tanh')`.
    #[track_caller]
    pub fn gelu_tanh(&self) -> Tensor {
        self.unary(UnaryOp::GeluTanh)
    }

    /// Elementwise sum with broadcasting.
    #[track_caller]
    pub fn add(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Add)
    }
    /// Elementwise difference with broadcasting.
    #[track_caller]
    pub fn sub(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Sub)
    }
    /// Elementwise product with broadcasting.
    #[track_caller]
    pub fn mul(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Mul)
    }
    /// Elementwise quotient with broadcasting.
    #[track_caller]
    pub fn div(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Div)
    }
    /// Elementwise maximum with broadcasting.
    #[track_caller]
    pub fn maximum(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Maximum)
    }
    /// 1 where `self == other`, else 0.
    #[track_caller]
    pub fn eq_mask(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Eq)
    }
    /// 1 where `self > other`, else 0.
    #[track_caller]
    pub fn gt_mask(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Gt)
    }
    /// 1 where `self >= other`, else 0.
    #[track_caller]
    pub fn ge_mask(&self, other: &Tensor) -> Tensor {
        other.gt_mask(self).neg().add_scalar(1.0)
    }
    /// `mask ? self : other` elementwise, with broadcasting; `mask` holds 1 or 0 (as
    /// the `*_mask` ops give). Gradients flow to the picked side only.
    #[track_caller]
    pub fn where_mask(&self, mask: &Tensor, other: &Tensor) -> Tensor {
        &(self * mask) + &(other * &mask.neg().add_scalar(1.0))
    }

    /// Values limited to `[lo, hi]` (composed from `maximum`).
    #[track_caller]
    pub fn clamp(&self, lo: f32, hi: f32) -> Tensor {
        assert!(lo <= hi, "clamp: lo {lo} is above hi {hi}");
        let dev = self.device();
        self.maximum(&Tensor::full(&[], lo, dev))
            .neg()
            .maximum(&Tensor::full(&[], -hi, dev))
            .neg()
    }

    /// One-hot rows `[n, classes]` (f32) of a label tensor `[n]`; a label not below
    /// `classes` gives a row of zeros. No gradient.
    #[track_caller]
    pub fn one_hot(&self, classes: usize) -> Tensor {
        assert!(
            self.dtype() == DType::U32 && self.shape().len() == 1,
            "one_hot: needs a label tensor [n], got {:?} {:?}",
            self.dtype(),
            self.shape()
        );
        let shape = vec![self.shape()[0], classes];
        Tensor::from_node(Op::OneHot(OneHot { classes }), vec![self.clone()], shape, DType::F32)
    }
}

macro_rules! impl_operator {
    ($trait:ident, $method:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$method(self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                Tensor::$method(&self, &rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$method(&self, rhs)
            }
        }
    };
}
impl_operator!(Add, add);
impl_operator!(Sub, sub);
impl_operator!(Mul, mul);
impl_operator!(Div, div);

/// `tensor ∘ c` and `c ∘ tensor` for an `f32` scalar, as the ops with a 0-d tensor
/// would compute them (`t / 2.0` divides, it does not multiply by 0.5).
macro_rules! impl_scalar_operator {
    ($trait:ident, $method:ident, |$t:ident, $c:ident| $right:expr, |$t2:ident, $c2:ident| $left:expr) => {
        impl std::ops::$trait<f32> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, $c: f32) -> Tensor {
                let $t = self;
                $right
            }
        }
        impl std::ops::$trait<f32> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, c: f32) -> Tensor {
                std::ops::$trait::$method(&self, c)
            }
        }
        impl std::ops::$trait<&Tensor> for f32 {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, $t2: &Tensor) -> Tensor {
                let $c2 = self;
                $left
            }
        }
        impl std::ops::$trait<Tensor> for f32 {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, t: Tensor) -> Tensor {
                std::ops::$trait::$method(self, &t)
            }
        }
    };
}
impl_scalar_operator!(Add, add, |t, c| t.add_scalar(c), |t, c| t.add_scalar(c));
impl_scalar_operator!(Sub, sub, |t, c| t.add_scalar(-c), |t, c| (-t).add_scalar(c));
impl_scalar_operator!(Mul, mul, |t, c| t.mul_scalar(c), |t, c| t.mul_scalar(c));
impl_scalar_operator!(
    Div,
    div,
    |t, c| t / &Tensor::full(&[], c, t.device()),
    |t, c| &Tensor::full(&[], c, t.device()) / t
);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}
