//! The small digit CNN of the `cnn` and `explain` examples (and the browser page's):
//! conv-BN-ReLU-maxpool ×2 (1 → 16 → 32 channels, 3×3, padding 1), then
//! 32·7·7 → 10, on `[n, 1, 28, 28]` images. Included with
//! `#[path = "common/digits_cnn.rs"] mod digits_cnn;`.

use wgnn::nn::{self, BatchNorm2d, Conv2d, ConvConfig, Flatten, Linear, MaxPool2d, Sequential};
use wgnn::Device;

/// The model, with fresh weights from the global stream.
pub fn cnn(dev: &Device) -> Sequential {
    cnn_with((16, 32), dev)
}

/// The same architecture with `(c1, c2)` channels (`efficient`'s student: fewer).
pub fn cnn_with((c1, c2): (usize, usize), dev: &Device) -> Sequential {
    let same = ConvConfig {
        padding: 1,
        ..Default::default()
    };
    Sequential::new()
        .add(Conv2d::new(1, c1, 3, same, dev))
        .add(BatchNorm2d::new(c1, dev))
        .add(nn::Relu)
        .add(MaxPool2d::new(2, 2))
        .add(Conv2d::new(c1, c2, 3, same, dev))
        .add(BatchNorm2d::new(c2, dev))
        .add(nn::Relu)
        .add(MaxPool2d::new(2, 2))
        .add(Flatten)
        .add(Linear::new(c2 * 7 * 7, 10, dev))
}
