//! What a kernel is to the backends: a CPU function and a WGSL launch, both owned by
//! the kernel's family. The WGSL side is a section of the family's shader file plus
//! definitions generated here: the bindings and a named uniform struct, declared once
//! in Rust ([`Uniforms`]) so the shader reads `params.rows`, never a position.

use std::fmt;

/// Most axes a strided or broadcasting kernel handles.
pub(crate) const MAX_RANK: usize = 6;

/// One kernel launch with its sizes fixed: bindings are `reads()` read-only buffers,
/// then the buffers it writes.
pub(crate) trait Kernel: fmt::Debug + Send + Sync {
    /// How many leading bindings are read-only.
    fn reads(&self) -> usize;

    /// The CPU twin: `x` are the read bindings, `out` the written ones, each slice
    /// exactly as long as its binding's value (the backend cuts reused arena slots
    /// to size). Shapes come from the kernel's own fields; a twin may check slice
    /// lengths against them, never infer a shape from them.
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]);

    /// The GPU launch.
    fn wgsl(&self) -> Wgsl;

    /// The work of one launch, for the profiler (`Device::set_profile`), given the
    /// words of each binding (reads, then writes). By default: no floating-point
    /// operations counted and every binding read or written once; a family whose
    /// rate is best judged in FLOP/s (GEMM) states its flops.
    fn cost(&self, words: &[usize]) -> Cost {
        Cost::moved(words)
    }

    /// The launch written with subgroup operations, for adapters that have them
    /// (wgpu's `SUBGROUP`); `None` (the default): [`Kernel::wgsl`] everywhere. Its
    /// results may round differently from the plain launch's, but they are the same
    /// on every run on one adapter.
    fn wgsl_subgroups(&self) -> Option<Wgsl> {
        None
    }

    /// Other ways to run this launch on the GPU, for the GPU backend to time once
    /// per adapter and shape class and keep the fastest (`src/backend/tune_cache.rs`).
    /// Every variant must give the same bits: the choice depends on timing, the
    /// results never do. `None` (the default): [`Kernel::wgsl`] is the only way.
    fn tune(&self) -> Option<Tune> {
        None
    }

    /// CPU: the B operand this launch can read packed once per plan run instead of
    /// packing it itself (`backend/cpu/packed_gemm.rs`, [`crate::fast_path::FastPath::PackedOperand`]);
    /// `None` (the default) for every launch but a plain f32 product.
    fn packable(&self) -> Option<Packable> {
        None
    }

    /// CPU: the twin given B [`packable`](Kernel::packable) names already packed
    /// (`packed`), the read bindings `x` still including B's own. Called only where
    /// `packable` is `Some`.
    fn cpu_packed(&self, x: &[&[f32]], packed: &[f32], out: &mut [&mut [f32]]) {
        let _ = packed;
        self.cpu(x, out)
    }
}

/// A product's B operand that the CPU backend may pack once for several products
/// ([`Kernel::packable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Packable {
    /// Which read binding is B.
    pub input: usize,
    /// B's rows (the product's inner dimension).
    pub k: usize,
    /// B's columns.
    pub n: usize,
    /// B is stored transposed.
    pub tb: bool,
    /// Rows of A (not part of the packed form).
    pub m: usize,
}

/// Interchangeable GPU launches of one kernel (see [`Kernel::tune`]).
pub(crate) struct Tune {
    /// The shape class the choice holds for, e.g. `matmul nt m64 k1024 n128`: the
    /// key of the tune cache, together with the adapter.
    pub key: String,
    /// The candidates, each tagged with the adapters it is offered on; the first
    /// (offered everywhere) is the one used untimed (autotune off, or work too small
    /// to be worth timing). All give the same bits.
    pub variants: Vec<Variant>,
    /// Whether the launch is large enough to be worth timing.
    pub worth_timing: bool,
    /// The same candidates built for the shape class's own sizes, where the code of
    /// `variants` depends on more than the class (a GEMM's ragged edges within a size
    /// bucket): the choice's fingerprint is taken from these, so that every shape of
    /// the class shares one choice. `None`: from `variants`.
    pub canonical: Option<Vec<Variant>>,
}

impl Tune {
    /// A kernel over `parts` independent parts (parameters, inputs) of `words` words
    /// in all: `pass(which)` handles the parts `which`; the variants are all of them
    /// in one dispatch (`"one launch"`) or one dispatch each (`each`, e.g. `"per
    /// input"`), which give the same values, and the choice is keyed by `family`,
    /// the number of parts and the size.
    pub(crate) fn one_or_each(
        family: &str,
        each: &str,
        parts: usize,
        words: usize,
        pass: impl Fn(&[usize]) -> Wgsl,
    ) -> Tune {
        let all: Vec<usize> = (0..parts).collect();
        let one = Variant::new("one launch", vec![pass(&all)], 0);
        let mut variants = vec![one];
        if parts > 1 {
            variants.push(Variant::new(each, all.iter().map(|&j| pass(&[j])).collect(), 0));
        }
        Tune {
            key: format!("{family} p{parts} n{}", words.next_power_of_two()),
            variants,
            worth_timing: parts > 1 && words >= 1 << 14,
            canonical: None,
        }
    }
}

/// One way to run a kernel on the GPU: passes dispatched in order, each binding the
/// kernel's buffers and, when `scratch > 0`, a private scratch buffer of that many
/// words after them (one more write binding).
pub(crate) struct Variant {
    /// Names the variant in the tune cache and the profiler, e.g. `64x64k16`.
    pub name: String,
    pub passes: Vec<Wgsl>,
    pub scratch: usize,
    /// The adapters the autotune offers it on.
    pub offer: Offer,
}

impl Variant {
    /// A variant offered on every adapter.
    pub(crate) fn new(name: impl Into<String>, passes: Vec<Wgsl>, scratch: usize) -> Variant {
        Variant {
            name: name.into(),
            passes,
            scratch,
            offer: Offer::Everywhere,
        }
    }

    /// This variant, offered only on `offer`'s adapters.
    pub(crate) fn offered(self, offer: Offer) -> Variant {
        Variant { offer, ..self }
    }
}

/// The adapters a [`Variant`] is offered on, by class
/// ([`DeviceInfo`](crate::backend::info::DeviceInfo)'s device type and subgroups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Every adapter.
    Everywhere,
    /// Adapters that are CPUs (llvmpipe, SwiftShader, WARP: device type `Cpu`).
    CpuAdapter,
    /// CPU adapters whose subgroups are exactly eight lanes, one SIMD row (llvmpipe
    /// on AVX2), where subgroup operations are allowed: the variant may assume the
    /// subgroup is the eight neighbouring invocations along x.
    CpuSubgroups8,
    /// Adapters that are not CPUs (discrete and integrated GPUs).
    GpuAdapter,
}

/// What one launch computes and moves, for the profiler's GFLOP/s and GB/s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    /// Floating-point operations (0: not counted).
    pub flops: u64,
    /// Bytes read and written.
    pub bytes: u64,
}

impl Cost {
    /// No flops counted; each binding of `words` words read or written once.
    pub(crate) fn moved(words: &[usize]) -> Cost {
        Cost {
            flops: 0,
            bytes: 4 * words.iter().map(|&w| w as u64).sum::<u64>(),
        }
    }
}

/// A WGSL launch: which section of which shader file, what to generate before it,
/// the uniform values and the grid.
pub(crate) struct Wgsl {
    /// The family's whole shader file (`include_str!`); its prelude (before the first
    /// `//#kernel`) is shared by all its kernels.
    pub shader: &'static str,
    /// The `//#kernel <entry>` section to compile.
    pub entry: &'static str,
    /// Generated definitions (constants, the elementwise maps), placed before the
    /// shader.
    pub defs: String,
    /// The uniform struct, bound as `params`.
    pub uniforms: Uniforms,
    pub grid: Grid,
    /// Element type of the storage bindings: `f32`, or `u32` for kernels that move
    /// words without reading them as numbers (copies of label tensors keep their bits).
    pub element: &'static str,
    /// Per binding (reads, then writes), a type that replaces `element`, e.g.
    /// `vec4<f32>` for an operand read four words at a time; missing: `element`.
    pub types: Vec<&'static str>,
    /// The kernel never indexes outside its bindings (proved where its indices are
    /// made), so its module may be built without runtime bounds checks.
    pub in_bounds: bool,
}

impl Wgsl {
    /// A launch of `entry` in `shader` with f32 bindings.
    pub(crate) fn new(shader: &'static str, entry: &'static str, uniforms: Uniforms, grid: Grid) -> Wgsl {
        Wgsl {
            shader,
            entry,
            defs: String::new(),
            uniforms,
            grid,
            element: "f32",
            types: Vec::new(),
            in_bounds: false,
        }
    }

    /// Sets the type of each binding (reads, then writes); see [`Wgsl::types`].
    pub(crate) fn types(mut self, types: Vec<&'static str>) -> Wgsl {
        self.types = types;
        self
    }

    /// Declares that every index the kernel makes is inside its bindings; see
    /// [`Wgsl::in_bounds`].
    pub(crate) fn in_bounds(mut self) -> Wgsl {
        self.in_bounds = true;
        self
    }

    /// Adds generated definitions.
    pub(crate) fn defs(mut self, defs: impl Into<String>) -> Wgsl {
        self.defs += &defs.into();
        self
    }

    /// Binds the storage buffers as `array<u32>`.
    pub(crate) fn words(mut self) -> Wgsl {
        self.element = "u32";
        self
    }
}

/// How many workgroups a launch needs; the GPU backend folds a long 1-D launch into
/// a 2-D grid within the adapter's per-dimension limit (`flat_id` in common.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grid {
    /// One invocation per item, 256 per workgroup.
    Threads(usize),
    /// One workgroup per item.
    Groups(usize),
    /// A fixed 3-D grid of workgroups (matmul: column tiles, row tiles, K splits).
    Tiles(usize, usize, usize),
}

/// A uniform value.
#[derive(Clone, Debug)]
enum Value {
    U32(u32),
    F32(f32),
    /// Up to [`MAX_RANK`] words (dims or strides), read with `params_<name>(i)`.
    Dims(Vec<u32>),
}

/// A named uniform layout with its values. The WGSL struct and the words written to
/// the uniform buffer come from the same list, so they cannot disagree.
#[derive(Clone, Debug, Default)]
pub(crate) struct Uniforms {
    fields: Vec<(&'static str, Value)>,
}

/// Words per dims array (`array<vec4<u32>, 2>`: arrays in uniform space have a
/// 16-byte stride, so words are packed four to a vector).
const DIMS_VECS: usize = MAX_RANK.div_ceil(4);

impl Uniforms {
    /// No uniforms.
    pub(crate) fn new() -> Uniforms {
        Uniforms::default()
    }

    /// An unsigned size or index, read as `params.<name>`.
    #[track_caller]
    pub(crate) fn u32(mut self, name: &'static str, v: usize) -> Uniforms {
        let v = u32::try_from(v).unwrap_or_else(|_| panic!("uniform {name} = {v} does not fit in u32"));
        self.fields.push((name, Value::U32(v)));
        self
    }

    /// A float, read as `params.<name>`.
    pub(crate) fn f32(mut self, name: &'static str, v: f32) -> Uniforms {
        self.fields.push((name, Value::F32(v)));
        self
    }

    /// Up to [`MAX_RANK`] sizes, read as `params_<name>(i)`; missing ones are 0.
    #[track_caller]
    pub(crate) fn dims(mut self, name: &'static str, v: &[usize]) -> Uniforms {
        assert!(
            v.len() <= MAX_RANK,
            "uniform {name}: {} dims, at most {MAX_RANK}",
            v.len()
        );
        let words = v.iter().map(|&d| u32::try_from(d).expect("dims fit in u32")).collect();
        self.fields.push((name, Value::Dims(words)));
        self
    }

    /// Byte offset of each field and the struct's size, by WGSL's layout rules for the
    /// uniform address space (scalars 4-aligned, arrays of vec4 16-aligned).
    fn layout(&self) -> (Vec<usize>, usize) {
        let mut offset = 0usize;
        let offsets = self
            .fields
            .iter()
            .map(|(_, v)| {
                let (align, size) = match v {
                    Value::U32(_) | Value::F32(_) => (4, 4),
                    Value::Dims(_) => (16, 16 * DIMS_VECS),
                };
                offset = offset.div_ceil(align) * align;
                let at = offset;
                offset += size;
                at
            })
            .collect();
        (offsets, offset.div_ceil(16).max(1) * 16)
    }

    /// The uniform buffer's contents.
    pub(crate) fn words(&self) -> Vec<u32> {
        let (offsets, size) = self.layout();
        let mut words = vec![0u32; size / 4];
        for ((_, v), at) in self.fields.iter().zip(offsets) {
            match v {
                Value::U32(x) => words[at / 4] = *x,
                Value::F32(x) => words[at / 4] = x.to_bits(),
                Value::Dims(d) => words[at / 4..at / 4 + d.len()].copy_from_slice(d),
            }
        }
        words
    }

    /// The WGSL declaration: `struct Params`, its binding as `params`, and an
    /// accessor per dims array.
    pub(crate) fn wgsl(&self) -> String {
        let mut members: Vec<String> = self
            .fields
            .iter()
            .map(|(name, v)| match v {
                Value::U32(_) => format!("{name}: u32"),
                Value::F32(_) => format!("{name}: f32"),
                Value::Dims(_) => format!("{name}: array<vec4<u32>, {DIMS_VECS}>"),
            })
            .collect();
        if members.is_empty() {
            members.push("unused: u32".into());
        }
        let mut out = format!(
            "struct Params {{ {} }}\n@group(0) @binding(0) var<uniform> params: Params;\n",
            members.join(", ")
        );
        for (name, v) in &self.fields {
            if let Value::Dims(_) = v {
                out += &format!("fn params_{name}(i: u32) -> u32 {{ return params.{name}[i / 4u][i % 4u]; }}\n");
            }
        }
        out
    }
}

/// WGSL source of an f32 constant, exact to the bit.
pub(crate) fn wgsl_f32(v: f32) -> String {
    format!("bitcast<f32>({:#010x}u)", v.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_words_follow_the_wgsl_layout() {
        let u = Uniforms::new()
            .u32("n", 7)
            .u32("rank", 2)
            .dims("shape", &[3, 4])
            .f32("scale", 0.5);
        let words = u.words();
        // n, rank, pad, pad, shape (8 words), scale, pad ×3
        assert_eq!(words.len(), 16);
        assert_eq!(&words[..2], &[7, 2]);
        assert_eq!(&words[4..7], &[3, 4, 0]);
        assert_eq!(words[12], 0.5f32.to_bits());
        assert!(u
            .wgsl()
            .contains("struct Params { n: u32, rank: u32, shape: array<vec4<u32>, 2>, scale: f32 }"));
    }
}
