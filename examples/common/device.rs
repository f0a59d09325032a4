//! The examples' `--device cpu|gpu` flag (clap derive), shared so that every example
//! names and opens its device the same way. Included with
//! `#[path = "common/device.rs"] mod device;` and flattened into an example's `Args`
//! with `#[command(flatten)] device: device::DeviceArg`.

use wgnn::{Device, Result};

/// `--device cpu|gpu`.
#[derive(clap::Args)]
pub struct DeviceArg {
    /// The device (default: the GPU if one works, else the CPU; WGNN_DEVICE overrides the default).
    #[arg(long, value_parser = ["cpu", "gpu"])]
    device: Option<String>,
}

impl DeviceArg {
    /// The device named (`gpu` is an error when no adapter works), or without
    /// `--device` [`Device::best`] (which `WGNN_DEVICE` overrides, and which says what it chose).
    pub fn open(&self) -> Result<Device> {
        self.device
            .as_deref()
            .map_or_else(|| Ok(Device::best()), Device::from_name)
    }
}
