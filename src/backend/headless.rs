//! Keeps the Vulkan probe quiet on a machine with no display.
//!
//! Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` (installed with Mesa's
//! Vulkan drivers, lavapipe included) puts first the GPU that drives the user's
//! display. Because wgpu enables every window-system extension the driver offers
//! (`VK_KHR_wayland_surface` among them; wgpu 30 has no compute-only instance), the
//! layer calls `wl_display_connect` on each `vkEnumeratePhysicalDevices`, and with no
//! usable `XDG_RUNTIME_DIR` libwayland prints `error: XDG_RUNTIME_DIR is invalid or
//! not set in the environment.` to stderr, once per enumeration: the first lines a
//! newcomer sees on a headless machine, about nothing that is wrong.
//!
//! The layer's manifest names its off switch, `NODEVICE_SELECT=1`. wgnn sets it only
//! when the layer has nothing to choose by — no X display (`DISPLAY`), no Wayland
//! display that libwayland could reach (`WAYLAND_SOCKET`, an absolute
//! `WAYLAND_DISPLAY` or `XDG_RUNTIME_DIR`) — and the user has not steered it
//! (`NODEVICE_SELECT`, `MESA_VK_DEVICE_SELECT`, `DRI_PRIME` unset). Nothing else
//! changes: wgnn requests its adapter by power preference, not by the layer's order.
//!
//! Setting a variable from a library is a last resort, taken because neither wgpu
//! nor the Vulkan loader offers another way to leave the layer out (creating the
//! Vulkan instance by hand breaks `wgpu-hal`'s documented contract). It happens once,
//! before wgnn creates its first wgpu instance (the loader reads the variable then),
//! under a `Once`; Rust's own environment reads are synchronized with it.

use std::path::Path;
use std::sync::Once;

/// Turns the device-select layer off when it could only print noise (see the
/// module doc). Call before creating a wgpu instance; later calls do nothing.
pub(crate) fn quiet_device_select_layer() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if cfg!(target_os = "linux") && !display_or_user_choice() {
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    });
}

fn display_or_user_choice() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let absolute = |name: &str| std::env::var_os(name).is_some_and(|v| Path::new(&v).is_absolute());
    ["NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT", "DRI_PRIME"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
        || set("DISPLAY")
        || set("WAYLAND_SOCKET")
        || absolute("WAYLAND_DISPLAY")
        || absolute("XDG_RUNTIME_DIR")
}
