//! The CPU reference backend: one plain-Rust function per kernel family, the ground
//! truth that the WGSL kernels in `shaders/` are tested against.

use std::sync::{Arc, Mutex, RwLock};

use super::{BoxFuture, Counters, Executable, Kernel, Program, Slot, Step, Storage};
use crate::graph::elementwise::sigmoid;
use crate::graph::op::{Act, ReduceKind, UpdateKind};
use crate::{DeviceInfo, DeviceKind, Error, Result};

/// A CPU buffer; its bytes count as live while it exists.
pub(crate) struct CpuBuffer {
    pub data: RwLock<Vec<f32>>,
    counters: Arc<Counters>,
    bytes: u64,
}

impl CpuBuffer {
    fn new(data: Vec<f32>, counters: &Arc<Counters>) -> Arc<CpuBuffer> {
        let bytes = (data.len() * 4) as u64;
        Counters::add(&counters.live_buffer_bytes, bytes);
        Arc::new(CpuBuffer {
            data: RwLock::new(data),
            counters: counters.clone(),
            bytes,
        })
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        Counters::sub(&self.counters.live_buffer_bytes, self.bytes);
    }
}

pub(crate) struct CpuBackend {
    counters: Arc<Counters>,
}

impl CpuBackend {
    pub(crate) fn new(counters: Arc<Counters>) -> CpuBackend {
        CpuBackend { counters }
    }

    fn buffer<'a>(&self, storage: &'a Storage) -> Result<&'a Arc<CpuBuffer>> {
        match storage {
            Storage::Cpu(b) => Ok(b),
            _ => Err(Error::Invalid(
                "a CPU plan was given a value that lives on another device".into(),
            )),
        }
    }
}

impl super::Backend for CpuBackend {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            kind: DeviceKind::Cpu,
            name: "cpu".into(),
            backend: "reference".into(),
            driver: format!("wgnn {}", env!("CARGO_PKG_VERSION")),
            device_type: "Cpu".into(),
            max_storage_buffer_binding_size: u64::MAX,
            max_buffer_size: u64::MAX,
            max_compute_workgroup_storage_size: 0,
            max_compute_invocations_per_workgroup: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            max_compute_workgroups_per_dimension: u32::MAX,
        }
    }

    fn stage(&self, data: Vec<f32>) -> Result<Storage> {
        Ok(Storage::Cpu(CpuBuffer::new(data, &self.counters)))
    }

    fn make_resident(&self, storage: Storage) -> Result<Storage> {
        Ok(storage)
    }

    fn overwrite(&self, storage: Storage, data: &[f32]) -> Result<Storage> {
        self.buffer(&storage)?.data.write().unwrap().copy_from_slice(data);
        Ok(storage)
    }

    fn read<'a>(&'a self, storage: &'a Storage) -> BoxFuture<'a, Result<Vec<f32>>> {
        Box::pin(async move { Ok(self.buffer(storage)?.data.read().unwrap().clone()) })
    }

    fn compile(&self, program: Program) -> Result<Box<dyn Executable>> {
        let arena = program.arena.iter().map(|&w| vec![0.0; w]).collect();
        let bytes: usize = program.arena.iter().sum::<usize>() * 4;
        Counters::add(&self.counters.live_buffer_bytes, bytes as u64);
        Ok(Box::new(CpuPlan {
            program,
            arena: Mutex::new(arena),
            counters: self.counters.clone(),
            bytes: bytes as u64,
        }))
    }
}

struct CpuPlan {
    program: Program,
    arena: Mutex<Vec<Vec<f32>>>,
    counters: Arc<Counters>,
    bytes: u64,
}

impl Drop for CpuPlan {
    fn drop(&mut self) {
        Counters::sub(&self.counters.live_buffer_bytes, self.bytes);
    }
}

impl Executable for CpuPlan {
    fn run(&self, externals: &[Storage]) -> Result<Vec<Storage>> {
        let ext: Vec<&Arc<CpuBuffer>> = externals
            .iter()
            .map(|s| match s {
                Storage::Cpu(b) => Ok(b),
                _ => Err(Error::Invalid(
                    "a CPU plan was given a value that lives on another device".into(),
                )),
            })
            .collect::<Result<_>>()?;
        let mut arena = self.arena.lock().unwrap();
        for step in &self.program.steps {
            run_step(step, &mut arena, &ext);
        }
        let kept = self
            .program
            .kept
            .iter()
            .map(|&(slot, words)| {
                let data = match slot {
                    Slot::Arena(s) => arena[s][..words].to_vec(),
                    Slot::External(e) => ext[e].data.read().unwrap()[..words].to_vec(),
                };
                Storage::Cpu(CpuBuffer::new(data, &self.counters))
            })
            .collect();
        for step in &self.program.updates {
            run_step(step, &mut arena, &ext);
        }
        let launches = (self.program.steps.len() + self.program.updates.len()) as u64;
        Counters::add(&self.counters.dispatches, launches);
        Counters::add(&self.counters.submits, 1);
        Ok(kept)
    }
}

/// Runs one step: takes the written buffers out (arena) or locks them (externals),
/// borrows the read ones, and calls the kernel's CPU function.
fn run_step(step: &Step, arena: &mut [Vec<f32>], ext: &[&Arc<CpuBuffer>]) {
    let reads = step.kernel.reads();
    let mut taken: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut ext_guards = Vec::new();
    for slot in &step.bindings[reads..] {
        match *slot {
            Slot::Arena(s) => taken.push((s, std::mem::take(&mut arena[s]))),
            Slot::External(e) => ext_guards.push(ext[e].data.write().unwrap()),
        }
    }
    {
        let read_guards: Vec<_> = step.bindings[..reads]
            .iter()
            .map(|slot| match *slot {
                Slot::External(e) => Some(ext[e].data.read().unwrap()),
                Slot::Arena(_) => None,
            })
            .collect();
        let inputs: Vec<&[f32]> = step.bindings[..reads]
            .iter()
            .zip(&read_guards)
            .map(|(slot, guard)| match (slot, guard) {
                (_, Some(g)) => &g[..],
                (Slot::Arena(s), None) => &arena[*s][..],
                _ => unreachable!(),
            })
            .collect();
        let mut outputs: Vec<&mut [f32]> = taken
            .iter_mut()
            .map(|(_, v)| &mut v[..])
            .chain(ext_guards.iter_mut().map(|g| &mut g[..]))
            .collect();
        run_kernel(&step.kernel, &inputs, &mut outputs);
    }
    for (s, v) in taken {
        arena[s] = v;
    }
}

/// The CPU twin of every kernel.
pub(crate) fn run_kernel(kernel: &Kernel, x: &[&[f32]], out: &mut [&mut [f32]]) {
    match kernel {
        Kernel::Fill { n, value } => out[0][..*n].fill(*value),
        Kernel::Unary { op, n } => {
            for (o, &v) in out[0][..*n].iter_mut().zip(&x[0][..*n]) {
                *o = op.cpu(v);
            }
        }
        Kernel::Binary {
            op,
            shape,
            a_strides,
            b_strides,
        } => binary(*op, shape, a_strides, b_strides, x[0], x[1], out[0]),
        Kernel::MatMul {
            m,
            k,
            n,
            ta,
            tb,
            bias,
            act,
        } => {
            matmul(*m, *k, *n, *ta, *tb, x[0], x[1], out[0]);
            epilogue(*m, *n, if *bias { Some(x[2]) } else { None }, *act, out[0]);
        }
        Kernel::Reduce {
            kind,
            outer,
            len,
            inner,
            chunk,
        } => reduce(*kind, *outer, *len, *inner, *chunk, x[0], out[0]),
        Kernel::ArgMax { outer, len, inner } => {
            for o in 0..*outer {
                for i in 0..*inner {
                    let (mut best, mut at) = (f32::NEG_INFINITY, 0u32);
                    for l in 0..*len {
                        let v = x[0][(o * len + l) * inner + i];
                        if v > best || (l == 0) {
                            best = v;
                            at = l as u32;
                        }
                    }
                    out[0][o * inner + i] = f32::from_bits(at);
                }
            }
        }
        Kernel::Strided { shape, in_strides } => {
            let n: usize = shape.iter().product();
            let last = shape.len() - 1;
            let (len, stride) = (shape[last], in_strides[last]);
            let mut base = 0usize;
            let mut idx = vec![0usize; shape.len()];
            let mut o = 0;
            while o < n {
                for j in 0..len {
                    out[0][o + j] = x[0][base + j * stride];
                }
                o += len;
                // Odometer over the outer axes.
                for d in (0..last).rev() {
                    idx[d] += 1;
                    base += in_strides[d];
                    if idx[d] < shape[d] {
                        break;
                    }
                    base -= in_strides[d] * shape[d];
                    idx[d] = 0;
                }
            }
        }
        Kernel::CrossEntropyRows { rows, classes } => {
            for r in 0..*rows {
                let row = &x[0][r * classes..(r + 1) * classes];
                let label = x[1][r].to_bits() as usize;
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
                out[0][r] = if label < *classes {
                    sum.ln() + max - row[label]
                } else {
                    f32::NAN
                };
            }
        }
        Kernel::CrossEntropyRowsGrad { rows, classes } => {
            for r in 0..*rows {
                let row = &x[0][r * classes..(r + 1) * classes];
                let label = x[1][r].to_bits() as usize;
                let g = x[2][r];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
                for c in 0..*classes {
                    let p = (row[c] - max).exp() / sum;
                    out[0][r * classes + c] = (p - (c == label) as u32 as f32) * g;
                }
            }
        }
        Kernel::Update { kind, n } => update(*kind, *n, x[0], x[1], x[2][0], out),
        Kernel::Increment => out[0][0] += 1.0,
        Kernel::OneHot { n, classes } => {
            for (i, o) in out[0][..*n].iter_mut().enumerate() {
                *o = (x[0][i / classes].to_bits() as usize == i % classes) as u32 as f32;
            }
        }
        Kernel::Dropout { n, p } => {
            let key = crate::rng::dropout_key(x[1][0].to_bits(), x[1][1].to_bits());
            let (threshold, scale) = crate::rng::dropout_threshold(*p);
            for (i, (o, &v)) in out[0][..*n].iter_mut().zip(&x[0][..*n]).enumerate() {
                *o = if crate::rng::dropout_keeps(key, i as u64, threshold) {
                    v * scale
                } else {
                    0.0
                };
            }
        }
    }
}

fn binary(
    op: crate::graph::elementwise::BinaryOp,
    shape: &[usize],
    sa: &[usize],
    sb: &[usize],
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
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
                    *r = op.cpu(x, y);
                }
            }
            (1, 0) => {
                let y = b[ib];
                for (r, &x) in row.iter_mut().zip(&a[ia..ia + len]) {
                    *r = op.cpu(x, y);
                }
            }
            _ => {
                for (j, r) in row.iter_mut().enumerate() {
                    *r = op.cpu(a[ia + j * la], b[ib + j * lb]);
                }
            }
        }
        o += len;
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

/// `op(A)·op(B)` through `matrixmultiply`, transposes expressed as strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(m: usize, k: usize, n: usize, ta: bool, tb: bool, a: &[f32], b: &[f32], out: &mut [f32]) {
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    // SAFETY: the slices hold at least m·k, k·n and m·n elements (checked when the
    // op was built) and the strides address exactly those.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

fn epilogue(m: usize, n: usize, bias: Option<&[f32]>, act: Act, out: &mut [f32]) {
    if bias.is_none() && act == Act::None {
        return;
    }
    for row in out[..m * n].chunks_mut(n) {
        if let Some(bias) = bias {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
        match act {
            Act::None => {}
            Act::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Sigmoid => row.iter_mut().for_each(|v| *v = sigmoid(*v)),
            Act::Tanh => row.iter_mut().for_each(|v| *v = v.tanh()),
        }
    }
}

fn reduce(kind: ReduceKind, outer: usize, len: usize, inner: usize, chunk: usize, x: &[f32], out: &mut [f32]) {
    let init = match kind {
        ReduceKind::Sum => 0.0,
        ReduceKind::Max => f32::NEG_INFINITY,
    };
    let combine = |a: f32, b: f32| match kind {
        ReduceKind::Sum => a + b,
        ReduceKind::Max => a.max(b),
    };
    if inner == 1 {
        // The GPU's order: 256 strided partial results, then a tree (so the two
        // backends agree bit for bit, and long sums stay accurate).
        let chunks = len.div_ceil(chunk.max(1));
        for (w, result) in out[..outer * chunks].iter_mut().enumerate() {
            let (o, c) = (w / chunks, w % chunks);
            let row = &x[o * len + c * chunk..o * len + ((c + 1) * chunk).min(len)];
            let mut partial = [init; 256];
            for (j, &v) in row.iter().enumerate() {
                partial[j % 256] = combine(partial[j % 256], v);
            }
            let mut s = 128;
            while s > 0 {
                for i in 0..s {
                    partial[i] = combine(partial[i], partial[i + s]);
                }
                s /= 2;
            }
            *result = partial[0];
        }
        return;
    }
    out[..outer * inner].fill(init);
    for o in 0..outer {
        let acc = &mut out[o * inner..(o + 1) * inner];
        for l in 0..len {
            let row = &x[(o * len + l) * inner..(o * len + l + 1) * inner];
            match kind {
                ReduceKind::Sum => acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v),
                ReduceKind::Max => acc.iter_mut().zip(row).for_each(|(a, &v)| *a = a.max(v)),
            }
        }
    }
}

/// Optimizer updates, in place, with `torch.optim` semantics. `step` is the number
/// of updates already applied.
fn update(kind: UpdateKind, n: usize, grad: &[f32], hyper: &[f32], step: f32, out: &mut [&mut [f32]]) {
    match kind {
        UpdateKind::Sgd { momentum: false } => {
            let (lr, wd) = (hyper[0], hyper[3]);
            for (p, &g) in out[0][..n].iter_mut().zip(&grad[..n]) {
                *p -= lr * (g + wd * *p);
            }
        }
        UpdateKind::Sgd { momentum: true } => {
            let (lr, momentum, dampening, wd, nesterov) = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4] != 0.0);
            let [param, buf] = out else {
                unreachable!("sgd with momentum writes param, buf")
            };
            for ((p, b), &g) in param[..n].iter_mut().zip(buf[..n].iter_mut()).zip(&grad[..n]) {
                let g = g + wd * *p;
                *b = if step == 0.0 {
                    g
                } else {
                    momentum * *b + (1.0 - dampening) * g
                };
                *p -= lr * if nesterov { g + momentum * *b } else { *b };
            }
        }
        UpdateKind::Adam { decoupled } => {
            let [param, m, v] = out else {
                unreachable!("adam writes param, m, v")
            };
            let (param, m, v) = (&mut param[..n], &mut m[..n], &mut v[..n]);
            if decoupled {
                adam::<true>(hyper, step, &grad[..n], param, m, v)
            } else {
                adam::<false>(hyper, step, &grad[..n], param, m, v)
            }
        }
    }
}

/// Adam / AdamW over whole slices (zipped, so the loop vectorizes; the CPU step is
/// dominated by this loop on small models).
fn adam<const DECOUPLED: bool>(
    hyper: &[f32],
    step: f32,
    grad: &[f32],
    param: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let (lr, b1, b2, eps, wd) = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4]);
    let t = step + 1.0;
    let bc1 = 1.0 - b1.powf(t);
    let bc2_sqrt = (1.0 - b2.powf(t)).sqrt();
    let step_size = lr / bc1;
    for (((p, m), v), &g) in param.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grad) {
        let g = if DECOUPLED {
            *p *= 1.0 - lr * wd;
            g
        } else {
            g + wd * *p
        };
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p -= step_size * *m / denom;
    }
}
