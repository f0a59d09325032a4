//! The numerical debugging modes (`Device::set_check_nan`, `Device::set_shadow`): a
//! plan runs with a watch on every node it computes, in execution order. NaN-check
//! mode stops at the first node holding NaN or ±Inf; shadow mode replays the same
//! kernels on the CPU reference, node by node on the GPU's own inputs, and stops at
//! the first node whose values differ beyond the tolerance. Either error names the
//! node's op, shape and the source line that built it. Off, neither costs more than
//! two flag loads per plan run.

use std::sync::RwLock;

use crate::backend::wait::wait;
use crate::backend::{cpu, Executable, Probe, Program, Slot, Step, Storage, Watch};
use crate::device::DebugModes;
use crate::tensor::DType;
use crate::{Device, DeviceKind, Error, Result, Tensor, Tolerance};

impl DebugModes {
    /// Whether a plan run must be watched.
    pub(crate) fn any(&self) -> bool {
        self.check_nan.load(std::sync::atomic::Ordering::Relaxed)
            || self.shadow_on.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Runs a compiled plan under the device's debugging modes.
pub(crate) fn run(
    exec: &dyn Executable,
    program: &Program,
    nodes: &[Tensor],
    externals: &[Storage],
    device: &Device,
) -> Result<Vec<Storage>> {
    let check_nan = device.check_nan();
    let mut shadow = match (device.kind(), device.shadow()) {
        (DeviceKind::Gpu, Some(tolerance)) => Some(Shadow::new(program, externals, device, tolerance)?),
        _ => None,
    };
    let probes = &program.probes;
    let mut observe = |k: usize, values: &[f32]| -> Result<()> {
        let node = &nodes[probes[k].node];
        if check_nan && node.dtype() == DType::F32 {
            check_finite(node, values)?;
        }
        if let Some(shadow) = shadow.as_mut() {
            shadow.compare(&probes[k], node, values)?;
        }
        Ok(())
    };
    exec.run(
        externals,
        Some(Watch {
            probes,
            observe: &mut observe,
        }),
    )
}

fn check_finite(node: &Tensor, values: &[f32]) -> Result<()> {
    let Some(index) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    Err(Error::NonFinite {
        op: format!("{:?}", node.0.op),
        shape: node.shape().to_vec(),
        location: node.0.origin.to_string(),
        value: values[index],
        index,
        count: values.iter().filter(|v| !v.is_finite()).count(),
        numel: values.len(),
    })
}

/// The CPU half of shadow mode: the plan's arena on the host, advanced kernel by
/// kernel, and set to the GPU's value of each node once compared (so each node is
/// judged on its own kernels, not on the rounding of everything before it).
struct Shadow<'a> {
    steps: &'a [Step],
    done: usize,
    arena: Vec<Vec<f32>>,
    externals: Vec<RwLock<Vec<f32>>>,
    tolerance: Tolerance,
}

impl<'a> Shadow<'a> {
    fn new(program: &'a Program, externals: &[Storage], device: &Device, tolerance: Tolerance) -> Result<Shadow<'a>> {
        let externals = externals
            .iter()
            .zip(&program.externals)
            .map(|(storage, spec)| {
                let read = device.backend().read(storage);
                let mut values = wait(read, "shadow mode", "the native build")?;
                values.truncate(spec.words);
                Ok(RwLock::new(values))
            })
            .collect::<Result<_>>()?;
        Ok(Shadow {
            steps: &program.steps,
            done: 0,
            arena: program.arena.iter().map(|&words| vec![0.0; words]).collect(),
            externals,
            tolerance,
        })
    }

    fn compare(&mut self, probe: &Probe, node: &Tensor, gpu: &[f32]) -> Result<()> {
        let externals: Vec<&RwLock<Vec<f32>>> = self.externals.iter().collect();
        for step in &self.steps[self.done..probe.after] {
            cpu::run_step_plain(step, &mut self.arena, &externals);
        }
        self.done = probe.after;
        let Slot::Arena(slot) = probe.slot else {
            return Ok(());
        };
        let cpu = &mut self.arena[slot][..probe.words];
        let result = match node.dtype() {
            DType::F32 => self.tolerance.check(gpu, cpu),
            DType::U32 | DType::F16 => exact(gpu, cpu),
        };
        if let Some(d) = result {
            return Err(Error::Divergence {
                op: format!("{:?}", node.0.op),
                shape: node.shape().to_vec(),
                location: node.0.origin.to_string(),
                index: d.index,
                gpu: d.gpu,
                cpu: d.cpu,
                max_abs: d.max_abs,
                max_rel: d.max_rel,
                atol: self.tolerance.atol,
                rtol: self.tolerance.rtol,
            });
        }
        cpu.copy_from_slice(gpu);
        Ok(())
    }
}

/// Where two value sets disagree: the worst index and the largest differences.
struct Difference {
    index: usize,
    gpu: f32,
    cpu: f32,
    max_abs: f32,
    max_rel: f32,
}

impl Tolerance {
    /// `None` if every `gpu` value is within the tolerance of its `cpu` value (equal
    /// NaNs and equal infinities agree).
    fn check(&self, gpu: &[f32], cpu: &[f32]) -> Option<Difference> {
        let mut worst: Option<(f32, usize)> = None;
        let (mut max_abs, mut max_rel) = (0.0f32, 0.0f32);
        for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
            if g == c || (g.is_nan() && c.is_nan()) {
                continue;
            }
            let diff = (g - c).abs();
            let diff = if diff.is_nan() { f32::INFINITY } else { diff };
            max_abs = max_abs.max(diff);
            if c != 0.0 {
                max_rel = max_rel.max(diff / c.abs());
            }
            let excess = diff / (self.atol + self.rtol * c.abs());
            let excess = if excess.is_nan() { f32::INFINITY } else { excess };
            if excess > 1.0 && worst.is_none_or(|(e, _)| excess > e) {
                worst = Some((excess, i));
            }
        }
        worst.map(|(_, index)| Difference {
            index,
            gpu: gpu[index],
            cpu: cpu[index],
            max_abs,
            max_rel,
        })
    }
}

/// Label values must agree bit for bit.
fn exact(gpu: &[f32], cpu: &[f32]) -> Option<Difference> {
    let index = gpu.iter().zip(cpu).position(|(g, c)| g.to_bits() != c.to_bits())?;
    let as_number = |v: f32| v.to_bits() as f32;
    let diff = (as_number(gpu[index]) - as_number(cpu[index])).abs();
    Some(Difference {
        index,
        gpu: as_number(gpu[index]),
        cpu: as_number(cpu[index]),
        max_abs: diff,
        max_rel: diff / as_number(cpu[index]).abs().max(1.0),
    })
}
