//! Pooling layers (no parameters), PyTorch's `nn.MaxPool2d`, `nn.AvgPool2d`,
//! `nn.AdaptiveAvgPool2d` and `nn.MaxPool1d` over NCHW / NCL inputs: thin wrappers of
//! [`Tensor::max_pool2d`] and its kin, which hold the kernels and the gradients.

use super::{Module, TensorSpec};
use crate::ops::pool::{pooled_shape, Span};
use crate::Tensor;

/// A pooling layer over fixed windows: its type, PyTorch's name, the `Tensor`
/// method it applies and how many trailing axes it pools.
macro_rules! fixed_window_pool {
    ($(#[$doc:meta])* $ty:ident, $op:ident, $dims:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
        pub struct $ty {
            #[module(skip)]
            kernel: usize,
            #[module(skip)]
            stride: usize,
            #[module(skip)]
            padding: usize,
        }

        impl $ty {
            /// Windows of `kernel` entries every `stride` entries (per pooled axis),
            /// without padding.
            pub fn new(kernel: usize, stride: usize) -> $ty {
                $ty { kernel, stride, padding: 0 }
            }

            /// The same layer with `padding` entries added at both ends of each pooled
            /// axis (at most half the kernel, as PyTorch).
            pub fn padding(self, padding: usize) -> $ty {
                $ty { padding, ..self }
            }

            /// `(kernel, stride, padding)`.
            pub fn config(&self) -> (usize, usize, usize) {
                (self.kernel, self.stride, self.padding)
            }
        }

        impl Module for $ty {
            #[track_caller]
            fn forward(&self, x: &Tensor) -> Tensor {
                x.$op(self.kernel, self.stride, self.padding)
            }

            fn name(&self) -> String {
                format!(
                    "{}(kernel_size={}, stride={}, padding={})",
                    stringify!($ty),
                    self.kernel,
                    self.stride,
                    self.padding
                )
            }

            fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
                input.expect_f32()?;
                let spans = [Span::fixed(self.kernel, self.stride, self.padding); $dims];
                let shape = pooled_shape(stringify!($op), &input.shape, &spans)?;
                Ok(Some(TensorSpec::f32(&shape)))
            }
        }
    };
}

fixed_window_pool!(
    /// Max pooling over `kernel`×`kernel` windows of `[N, C, H, W]` (or `[C, H, W]`),
    /// as `nn.MaxPool2d(kernel, stride)`; `.padding(p)` pads with −∞. The gradient goes
    /// to each window's first maximum, with the same bits on every device
    /// ([`Tensor::max_pool2d`]).
    ///
    /// ```
    /// use wgnn::nn::{Flatten, MaxPool2d, Module, Sequential};
    /// use wgnn::{Device, Tensor};
    ///
    /// let dev = Device::cpu();
    /// let x = Tensor::randn(&[2, 3, 8, 8], 1, &dev).unwrap();
    /// let net = Sequential::new().add(MaxPool2d::new(2, 2)).add(Flatten);
    /// assert_eq!(net.forward(&x).shape(), &[2, 3 * 4 * 4]);
    /// assert!(net.parameters().is_empty());
    /// ```
    MaxPool2d, max_pool2d, 2
);
fixed_window_pool!(
    /// Average pooling over `kernel`×`kernel` windows of `[N, C, H, W]` (or
    /// `[C, H, W]`), as `nn.AvgPool2d(kernel, stride)`; `.padding(p)` pads with zeros
    /// that count in the divisor (PyTorch's `count_include_pad=True`).
    AvgPool2d, avg_pool2d, 2
);
fixed_window_pool!(
    /// Max pooling over windows of `kernel` entries of `[N, C, L]` (or `[C, L]`), as
    /// `nn.MaxPool1d(kernel, stride)`; `.padding(p)` pads with −∞.
    MaxPool1d, max_pool1d, 1
);

/// Average pooling of `[N, C, H, W]` (or `[C, H, W]`) into `out_h`×`out_w` bins
/// whatever the input's size, as `nn.AdaptiveAvgPool2d((out_h, out_w))`;
/// `AdaptiveAvgPool2d::new(1, 1)` is global average pooling. No parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
pub struct AdaptiveAvgPool2d {
    #[module(skip)]
    out_h: usize,
    #[module(skip)]
    out_w: usize,
}

impl AdaptiveAvgPool2d {
    /// `out_h` bins along H and `out_w` along W.
    pub fn new(out_h: usize, out_w: usize) -> AdaptiveAvgPool2d {
        AdaptiveAvgPool2d { out_h, out_w }
    }
}

impl Module for AdaptiveAvgPool2d {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.adaptive_avg_pool2d(self.out_h, self.out_w)
    }

    fn name(&self) -> String {
        format!("AdaptiveAvgPool2d(output_size=({}, {}))", self.out_h, self.out_w)
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        input.expect_f32()?;
        let spans = [Span::Adaptive { out: self.out_h }, Span::Adaptive { out: self.out_w }];
        let shape = pooled_shape("adaptive_avg_pool2d", &input.shape, &spans)?;
        Ok(Some(TensorSpec::f32(&shape)))
    }
}
