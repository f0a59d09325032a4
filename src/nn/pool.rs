//! Pooling layers (no parameters), PyTorch's `nn.MaxPool2d`, `nn.AvgPool2d`,
//! `nn.AdaptiveAvgPool2d` and `nn.MaxPool1d` over NCHW / NCL inputs: thin wrappers of
//! [`Tensor::max_pool2d`] and its kin, which hold the kernels and the gradients.

use super::{Module, TensorSpec};
use crate::ops::pool::{pooled_shape, PoolWindow, Span};
use crate::Tensor;

/// A pooling layer over fixed windows: its type, the `Tensor` method it applies
/// (taking a [`PoolWindow`]) and the op's name in messages, how many trailing axes
/// it pools and how a window of
/// that many axes is made from `(kernel, stride, padding)`.
macro_rules! fixed_window_pool {
    ($(#[$doc:meta])* $ty:ident, $op:ident, $op_name:literal, $dims:literal, $make:path) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
        pub struct $ty {
            #[module(skip)]
            window: PoolWindow,
        }

        impl $ty {
            /// Windows of `kernel` entries every `stride` entries (per pooled axis),
            /// without padding.
            pub fn new(kernel: usize, stride: usize) -> $ty {
                $ty {
                    window: $make(kernel, stride, 0),
                }
            }

            /// The same layer with `padding` entries added at both ends of each pooled
            /// axis (at most half the kernel, as PyTorch).
            pub fn padding(self, padding: usize) -> $ty {
                let w = self.window;
                $ty {
                    window: PoolWindow {
                        padding: $make(w.kernel[1], w.stride[1], padding).padding,
                        ..w
                    },
                }
            }

            /// The same layer with PyTorch's `ceil_mode`: a last, partial window where
            /// the input (with its left padding) leaves one.
            pub fn ceil_mode(self, ceil_mode: bool) -> $ty {
                $ty {
                    window: PoolWindow { ceil_mode, ..self.window },
                }
            }

            /// `(kernel, stride, padding)` along the last axis (for a square window,
            /// along every pooled axis); [`Self::window`] has all of them.
            pub fn config(&self) -> (usize, usize, usize) {
                let w = &self.window;
                (w.kernel[1], w.stride[1], w.padding[1])
            }

            /// The whole window: kernel, stride and padding per axis, and the options.
            pub fn window(&self) -> PoolWindow {
                self.window
            }
        }

        impl Module for $ty {
            #[track_caller]
            fn forward(&self, x: &Tensor) -> Tensor {
                x.$op(self.window)
            }

            fn name(&self) -> String {
                let w = &self.window;
                let pair = |v: [usize; 2]| match $dims == 1 || v[0] == v[1] {
                    true => v[1].to_string(),
                    false => format!("({}, {})", v[0], v[1]),
                };
                let mut out = format!(
                    "{}(kernel_size={}, stride={}, padding={}",
                    stringify!($ty),
                    pair(w.kernel),
                    pair(w.stride),
                    pair(w.padding)
                );
                if w.ceil_mode {
                    out += ", ceil_mode=True";
                }
                if !w.count_include_pad {
                    out += ", count_include_pad=False";
                }
                out + ")"
            }

            fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
                input.expect_f32()?;
                let spans: [Span; 2] = self.window.spans();
                let shape = pooled_shape($op_name, &input.shape, &spans[2 - $dims..])?;
                Ok(Some(TensorSpec::f32(&shape)))
            }
        }
    };
}

/// The 2-D layers also take any [`PoolWindow`].
macro_rules! window_2d {
    ($ty:ident, $torch:literal) => {
        impl $ty {
            #[doc = concat!("`", $torch, "` over any [`PoolWindow`]: non-square kernel, stride and")]
            /// padding (`(kh, kw)`), `ceil_mode`, `count_include_pad`.
            ///
            /// ```
            #[doc = concat!("use wgnn::nn::{Module, ", stringify!($ty), "};")]
            /// use wgnn::{Device, PoolWindow, Tensor};
            ///
            /// let x = Tensor::randn(&[1, 2, 7, 9], 0, &Device::cpu()).unwrap();
            /// let window = PoolWindow { kernel: [3, 2], stride: [2, 1], ..PoolWindow::square(2, 2, 0) };
            #[doc = concat!("let pool = ", stringify!($ty), "::with_window(window);")]
            /// assert_eq!(pool.forward(&x).shape(), &[1, 2, 3, 8]);
            /// ```
            pub fn with_window(window: PoolWindow) -> $ty {
                $ty { window }
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
    MaxPool2d, max_pool2d_with, "max_pool2d", 2, PoolWindow::square
);
window_2d!(MaxPool2d, "nn.MaxPool2d");
fixed_window_pool!(
    /// Average pooling over `kernel`×`kernel` windows of `[N, C, H, W]` (or
    /// `[C, H, W]`), as `nn.AvgPool2d(kernel, stride)`; `.padding(p)` pads with zeros
    /// that count in the divisor (PyTorch's `count_include_pad=True`; see
    /// [`AvgPool2d::count_include_pad`]).
    AvgPool2d, avg_pool2d_with, "avg_pool2d", 2, PoolWindow::square
);
window_2d!(AvgPool2d, "nn.AvgPool2d");

impl AvgPool2d {
    /// The same layer with PyTorch's `count_include_pad`: `false` divides each
    /// window's sum by the number of input entries in it, not counting the padding.
    pub fn count_include_pad(self, count_include_pad: bool) -> AvgPool2d {
        AvgPool2d {
            window: PoolWindow {
                count_include_pad,
                ..self.window
            },
        }
    }
}
fixed_window_pool!(
    /// Max pooling over windows of `kernel` entries of `[N, C, L]` (or `[C, L]`), as
    /// `nn.MaxPool1d(kernel, stride)`; `.padding(p)` pads with −∞.
    MaxPool1d, max_pool1d_with, "max_pool1d", 1, PoolWindow::line
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
