//! Matmul family (`shaders/matmul.wgsl`): `epilogue(op(A)·op(B) + bias)` where `op`
//! reads an operand transposed in place (no copy) and the epilogue is any map of
//! the elementwise table. The CPU twin is `matrixmultiply`'s sgemm, or, for a B that
//! the CPU backend packed once for several products of a plan (an RNN's `W_hh`,
//! [`Kernel::packable`]), wgnn's own register tiles (`backend/cpu/packed_gemm.rs`).
//!
//! Operands with leading batch axes (`torch.matmul`'s broadcasting) are one batched
//! GEMM: one launch with the batch on the grid's z axis, each operand's matrix found
//! through its own batch strides (zero along the axes it broadcasts); on the CPU, one
//! sgemm per matrix. A plain 2-D product takes the path it always took.
//!
//! On adapters that are CPUs the autotune also times flat tiles (`matmul_flat`, no
//! workgroup memory or barrier), because of how Mesa's gallivm (`lp_bld_nir_soa.c`,
//! read at 21.3 and 23.x) compiles a shader: a storage or shared load whose address
//! is not provably uniform is a loop over the 8 lanes of a 256-bit row, each an
//! extract, a bounds compare and a scalar load (a uniform address is one load and a
//! broadcast, but only for constants, push constants and their arithmetic before the
//! divergence-based test of recent Mesa); a barrier suspends the lane row's coroutine
//! and resumes the next. So there, loads per fma count and barriers cost switches.

use super::cast::unpack_halves;
use super::elementwise::UnaryOp;
use super::fused::{expr_fn, Expr, FusedKernel};
use super::{broadcast_strides, contiguous_strides, simplify, Lowering, Rule};
use crate::backend::cpu::helper_thread;
use crate::backend::cpu::packed_gemm;
use crate::backend::cpu::sgemm::{self, sgemm, sgemm_batch};
use crate::backend::kernel::{Cost, Grid, Kernel, Offer, Packable, Tune, Uniforms, Variant, Wgsl};
use crate::fast_path::{self, FastPath};
use crate::{Device, Tensor};

mod builders;

const SHADER: &str = include_str!("../../shaders/matmul.wgsl");

/// A GEMM node. Inputs: a, b, and bias when `bias`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMul {
    /// A is stored transposed.
    pub ta: bool,
    /// B is stored transposed.
    pub tb: bool,
    /// A bias row is added (third input).
    pub bias: bool,
    /// The map applied to each result, from the elementwise table.
    pub act: Option<UnaryOp>,
    /// A and B are f16 ([`crate::DType::F16`], packed two to a word): read as halves,
    /// multiplied and summed in f32 (mixed precision, [`crate::amp`]).
    pub half: bool,
}

impl Rule for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        Lowering::kernel(self.kernel(inputs, out, None), 2 + self.bias as usize)
    }

    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let gp = match self.act {
            None => g.clone(),
            Some(act) => match act.grad_from_output(y, g) {
                Some(gp) => gp,
                None => {
                    // The map needs its input: recompute the GEMM without it.
                    let pre = match inputs.get(2) {
                        Some(bias) => Tensor::matmul_node(a, b, Some(bias), self.ta, self.tb),
                        None => a.matmul_t(b, self.ta, self.tb),
                    };
                    match act.grad(&pre, y, g) {
                        Some(gp) => gp,
                        None => return vec![None; inputs.len()],
                    }
                }
            },
        };
        // With C = op(A)·op(B): dop(A) = gp·op(B)ᵀ and dop(B) = op(A)ᵀ·gp,
        // transposed back when the operand was stored transposed, and summed over the
        // batch axes an operand was broadcast along (nothing to sum for 2-D products).
        let da = match (self.ta, self.tb) {
            (false, false) => gp.matmul_t(b, false, true),
            (false, true) => gp.matmul_t(b, false, false),
            (true, false) => b.matmul_t(&gp, false, true),
            (true, true) => b.matmul_t(&gp, true, true),
        };
        let db = match (self.ta, self.tb) {
            (false, false) => a.matmul_t(&gp, true, false),
            (false, true) => gp.matmul_t(a, true, false),
            (true, false) => a.matmul_t(&gp, false, false),
            (true, true) => gp.matmul_t(a, true, true),
        };
        let mut out = vec![Some(da.sum_to_shape(a.shape())), Some(db.sum_to_shape(b.shape()))];
        if self.bias {
            out.push(Some(gp.sum_axis(0, false)));
        }
        out
    }
}

/// reads [a, b, bias?], writes [out]
#[derive(Debug)]
struct MatMulKernel {
    m: usize,
    k: usize,
    n: usize,
    op: MatMul,
    /// The batch of a product with leading axes; `None`: one 2-D product.
    batch: Option<Batch>,
    /// Elementwise maps a plan fused after the epilogue.
    tail: Option<Tail>,
}

/// Elementwise maps that a plan fused after a 2-D product's epilogue
/// (`src/graph/fuse.rs`), so that e.g. ReLU's gradient `g · step(y)` is applied as
/// the product `g` is stored: `expr` over input 0, the product's value after bias and
/// activation, and inputs 1.. (bound after the product's own), each read at the
/// output's index (`true`: it has the output's shape) or at 0 (one word). Each map is
/// evaluated as its own kernel would (`FusedKernel`), so the values are the unfused
/// graph's.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tail {
    pub expr: Expr,
    pub same: Vec<bool>,
}

impl MatMul {
    /// The kernel of this product of `inputs` (stored shapes) into `out`.
    fn kernel(&self, inputs: &[&[usize]], out: &[usize], tail: Option<Tail>) -> MatMulKernel {
        let a = inputs[0];
        let mut mkn = (
            out[out.len() - 2],
            a[a.len() - 2 + !self.ta as usize],
            out[out.len() - 1],
        );
        if out.len() > 2 && out.contains(&0) {
            mkn = (0, 0, 0); // an empty batch: a launch that loads and stores nothing
        }
        MatMulKernel {
            m: mkn.0,
            k: mkn.1,
            n: mkn.2,
            op: *self,
            batch: Batch::of(a, inputs[1], out),
            tail,
        }
    }

    /// This 2-D product with `tail` applied to its results: one launch (or split-K's
    /// two) binding the product's inputs, then the tail's.
    pub(crate) fn lower_with_tail(&self, inputs: &[&[usize]], out: &[usize], tail: Tail) -> Lowering {
        let reads = 2 + self.bias as usize + tail.same.len();
        Lowering::kernel(self.kernel(inputs, out, Some(tail)), reads)
    }
}

/// The batch of a product whose operands have leading axes: the output's batch axes
/// (merged where no operand breaks their contiguity, at most `MAX_RANK`) and, per
/// axis, the words from one matrix of A, of B to the next (0 along an axis that
/// operand broadcasts). Output matrix `z` is at `z·m·n`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Batch {
    dims: Vec<usize>,
    a: Vec<usize>,
    b: Vec<usize>,
}

impl Batch {
    /// The batch of `a · b → out` (stored shapes), or `None` for a single product (one
    /// matrix each) or none.
    fn of(a: &[usize], b: &[usize], out: &[usize]) -> Option<Batch> {
        let lead = |s: &[usize]| s[..s.len() - 2].to_vec();
        let outer = lead(out);
        let words = |s: &[usize]| s[s.len() - 2..].iter().product::<usize>();
        let strides = |s: &[usize]| -> Vec<usize> {
            let matrix = words(s);
            broadcast_strides(&lead(s), &outer)
                .iter()
                .map(|st| st * matrix)
                .collect()
        };
        let own = contiguous_strides(&outer);
        let (dims, mut st) = simplify(&outer, &[&strides(a), &strides(b), &own]);
        if dims.iter().product::<usize>() <= 1 {
            return None;
        }
        let b = st.swap_remove(1);
        let a = st.swap_remove(0);
        Some(Batch { dims, a, b })
    }

    /// Number of products.
    fn count(&self) -> usize {
        self.dims.iter().product()
    }

    /// Words of A and of B before the matrices of product `z`.
    fn offsets(&self, mut z: usize) -> (usize, usize) {
        let (mut oa, mut ob) = (0, 0);
        for d in (0..self.dims.len()).rev() {
            let i = z % self.dims[d];
            z /= self.dims[d];
            oa += i * self.a[d];
            ob += i * self.b[d];
        }
        (oa, ob)
    }
}

/// Most products one launch computes (WebGPU's default limit of workgroups along z);
/// a larger batch is computed in launches of this many.
const MAX_BATCH_GROUPS: usize = 65_535;

impl Kernel for MatMulKernel {
    fn reads(&self) -> usize {
        2 + self.op.bias as usize + self.tail.as_ref().map_or(0, |t| t.same.len())
    }

    fn packable(&self) -> Option<Packable> {
        (self.batch.is_none() && !self.op.half).then_some(Packable {
            input: 1,
            k: self.k,
            n: self.n,
            tb: self.op.tb,
            m: self.m,
        })
    }

    fn cpu_packed(&self, x: &[&[f32]], packed: &[f32], out: &mut [&mut [f32]]) {
        packed_gemm::gemm(self.m, self.k, self.n, self.op.ta, x[0], packed, out[0]);
        self.finish_cpu(x, 1, out);
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (m, k, n, MatMul { ta, tb, half, .. }) = (self.m, self.k, self.n, self.op);
        // f16 operands widened first (exactly), so the sums are the f32 GEMM's of the
        // rounded values.
        let widened = half.then(|| [0, 1].map(|i| unpack_halves(x[i], 2 * x[i].len())));
        let (a, b) = match &widened {
            Some([a, b]) => (&a[..], &b[..]),
            None => (x[0], x[1]),
        };
        let count = match &self.batch {
            None => {
                sgemm(m, k, n, ta, tb, a, b, out[0]);
                1
            }
            Some(batch) => {
                let offsets: Vec<_> = (0..batch.count()).map(|z| batch.offsets(z)).collect();
                sgemm_batch(m, k, n, ta, tb, a, b, &offsets, out[0]);
                batch.count()
            }
        };
        self.finish_cpu(x, count, out);
    }

    /// The default tile without a K split (for a batch, its first launch); the GPU
    /// backend runs [`Kernel::tune`]'s variants instead.
    fn wgsl(&self) -> Wgsl {
        self.gemm_pass(self.default_tile(), 1, 0, Stages::One)
    }

    /// `2·m·n·k` per product (the epilogue's bias and activation not counted).
    fn cost(&self, words: &[usize]) -> Cost {
        Cost {
            flops: 2 * (self.m * self.n * self.k * self.count()) as u64,
            ..Cost::moved(words)
        }
    }

    /// One variant per tile of [`TILES`], all with the same K split (chosen by shape
    /// alone, so that the bits never depend on timing); split launches add the
    /// slice-sum pass and a scratch buffer of the partial sums.
    fn tune(&self) -> Option<Tune> {
        let splits = self.splits();
        let (va, vb, vo) = self.vectors();
        // Counted here, once per launch compiled (`fast_path::taken`).
        fast_path::choose(FastPath::SplitK, splits > 1);
        fast_path::choose(FastPath::Vec4, va || vb || vo);
        let bucket = shape_bucket;
        let mut key = format!(
            "matmul {}{} m{} k{} n{} v{}{}{} s{splits}",
            if self.op.ta { 't' } else { 'n' },
            if self.op.tb { 't' } else { 'n' },
            bucket(self.m),
            bucket(self.k),
            bucket(self.n),
            va as u8,
            vb as u8,
            vo as u8,
        );
        if self.batch.is_some() {
            key += &format!(" b{}", bucket(self.count()));
        }
        if self.op.half {
            key += " f16";
        }
        if let Some(tail) = &self.tail {
            key += &format!(" t{}", tail.same.len());
        }
        // A 2-D product's variants for the bucket's own sizes: the fingerprint of the
        // choice, the same for every shape of the bucket (their edges differ); not
        // built again for a product of those sizes.
        let of_class = (bucket(self.m), bucket(self.k), bucket(self.n)) == (self.m, self.k, self.n);
        let canonical = (self.batch.is_none() && !of_class).then(|| {
            let class = MatMulKernel {
                m: bucket(self.m),
                k: bucket(self.k),
                n: bucket(self.n),
                op: self.op,
                batch: None,
                tail: self.tail.clone(),
            };
            class.variants(splits)
        });
        Some(Tune {
            key,
            variants: self.variants(splits),
            worth_timing: 2 * self.m * self.n * self.k * self.count() >= TUNE_FLOPS,
            canonical,
        })
    }
}

impl MatMulKernel {
    /// Every form of this product with `splits` K slices: the tiled forms everywhere
    /// (the default first), the flat and shuffle forms on CPU adapters, the
    /// two-stage forms on GPUs.
    fn variants(&self, splits: usize) -> Vec<Variant> {
        let default = self.default_tile();
        std::iter::once(default)
            .chain(TILES.into_iter().filter(|t| *t != default))
            .map(|tile| self.variant(tile, splits))
            .chain(
                FLAT_TILES
                    .into_iter()
                    .map(|t| self.flat_variant(t, splits, false).offered(Offer::CpuAdapter)),
            )
            .chain(
                SHUFFLE_TILES
                    .into_iter()
                    .map(|t| self.flat_variant(t, splits, true).offered(Offer::CpuSubgroups8)),
            )
            .chain(
                DOUBLE_TILES
                    .into_iter()
                    .map(|t| self.double_variant(t, splits).offered(Offer::GpuAdapter)),
            )
            .chain(
                WARP_TILES
                    .into_iter()
                    .map(|t| self.warp_variant(t, splits).offered(Offer::GpuAdapter)),
            )
            .collect()
    }
}

crate::backend::cpu::vmath::simd_fn! {
    /// The CPU epilogue of a product: `bias` added to every row of `n` words, then
    /// the activation.
    fn epilogue_cpu(out: &mut [f32], n: usize, bias: Option<&[f32]>, act: Option<UnaryOp>) {
        for row in out.chunks_mut(n.max(1)) {
            if let Some(bias) = bias {
                row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
            }
            if let Some(act) = act {
                act.map_in_place(row);
            }
        }
    }
}

/// A GEMM tile: `wx × wy` invocations, each computing `tm × tn` outputs (multiples of
/// 4: one vec4 per four columns), K walked in slices of `bk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    wx: usize,
    wy: usize,
    tm: usize,
    tn: usize,
    bk: usize,
}

impl Tile {
    const fn rows(self) -> usize {
        self.wy * self.tm
    }
    const fn cols(self) -> usize {
        self.wx * self.tn
    }
    /// The variant's name, e.g. `db128x64k8` for `prefix` "db".
    fn name(self, prefix: &str) -> String {
        format!("{prefix}{}x{}k{}", self.rows(), self.cols(), self.bk)
    }
}

impl Device {
    /// The names of the GEMM tiles the autotune offers on this device's adapter: the
    /// tiled forms, then for a CPU adapter its flat tiles, for a GPU its two-stage
    /// and warp-tiled ones (not the subgroup-shuffle tiles, which need 8-lane
    /// subgroups), each to be forced with [`Device::debug_kernel_variant`]: for
    /// benchmarks that time every tile.
    #[doc(hidden)]
    pub fn debug_gemm_tiles(&self) -> Vec<String> {
        let mut names: Vec<String> = TILES.iter().map(|t| t.name("")).collect();
        if self.info().device_type == "Cpu" {
            names.extend(FLAT_TILES.iter().map(|t| t.name("flat")));
        } else {
            names.extend(DOUBLE_TILES.iter().map(|t| t.name("db")));
            names.extend(WARP_TILES.iter().map(|t| t.name("wt")));
        }
        names
    }
}

/// The tiles the GPU autotune chooses from (after [`MatMulKernel::default_tile`]):
/// 64×64 (BK 16), 128×64 and 128×128 (BK 8) for large outputs, 32×64 and 32×32 for
/// small ones, where more workgroups fill more of the GPU. Workgroup memory is at
/// most 8 KiB and 256 invocations, inside WebGPU's default limits.
const TILES: [Tile; 5] = [
    Tile {
        wx: 16,
        wy: 16,
        tm: 4,
        tn: 4,
        bk: 16,
    },
    Tile {
        wx: 16,
        wy: 16,
        tm: 8,
        tn: 4,
        bk: 8,
    },
    Tile {
        wx: 16,
        wy: 16,
        tm: 8,
        tn: 8,
        bk: 8,
    },
    Tile {
        wx: 16,
        wy: 8,
        tm: 4,
        tn: 4,
        bk: 16,
    },
    Tile {
        wx: 8,
        wy: 8,
        tm: 4,
        tn: 4,
        bk: 16,
    },
];

/// The two-stage tiles offered where the adapter is a GPU (`matmul_db`): two stages of
/// workgroup memory (the next K slice loaded into registers while the current one is
/// multiplied, then stored to the other stage: one barrier per slice), rows padded by
/// one vec4 against bank conflicts, workgroups taken in groups of rows for cache reuse,
/// the k loop unrolled. Written to published practice for discrete GPUs (CUTLASS's
/// two-stage mainloop, Triton's grouped order); within 16 KiB of workgroup memory.
const DOUBLE_TILES: [Tile; 3] = [
    Tile {
        wx: 16,
        wy: 16,
        tm: 8,
        tn: 4,
        bk: 8,
    },
    Tile {
        wx: 16,
        wy: 16,
        tm: 4,
        tn: 4,
        bk: 8,
    },
    Tile {
        wx: 16,
        wy: 8,
        tm: 4,
        tn: 4,
        bk: 16,
    },
];

/// The two-stage tiles also offered warp-tiled (`wt128x64k8`, [`Stages::TwoWarpTiled`]).
const WARP_TILES: [Tile; 2] = [DOUBLE_TILES[0], DOUBLE_TILES[1]];

/// Lanes along n of a warp-tiled form's 32-invocation block: 4 rows × 8 columns of
/// invocations, so that a warp of 32 reads 4 · TM/4 + 8 · TN/4 distinct vec4s of
/// each k step's stages where the row-major order (2 × 16 on a 16-wide workgroup)
/// reads 2 · TM/4 + 16 · TN/4: for TM 8, TN 4, 16 against 20.
const WARP_X: usize = 8;

// Warp tiling places 32-invocation blocks of 4 × 8 over the workgroup.
const _: () = {
    let mut i = 0;
    while i < WARP_TILES.len() {
        let t = WARP_TILES[i];
        assert!(t.wx.is_multiple_of(WARP_X) && t.wy.is_multiple_of(32 / WARP_X) && (t.wx * t.wy).is_multiple_of(32));
        i += 1;
    }
};

/// How a tiled pass runs: `matmul`'s one stage of workgroup memory, or `matmul_db`'s
/// two, with each invocation's output tile where its id puts it (row-major over the
/// workgroup) or warp-tiled: every 32 consecutive invocations (a warp on NVIDIA, a
/// wave on RDNA and Apple's SIMD-groups) cover a compact 4 × 8 block of invocation
/// tiles (CUTLASS's warp tile), blocks row-major over the workgroup. Only where each
/// output is computed moves: the same fma chains, the same bits, whatever the
/// adapter's subgroup size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stages {
    One,
    Two,
    TwoWarpTiled,
}

/// A tile of the GEMM for adapters that are CPUs (`matmul_flat`): `wx` invocations
/// side by side along n, each computing `tm` rows × 4 columns, no workgroup memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlatTile {
    wx: usize,
    tm: usize,
}

impl FlatTile {
    const fn cols(self) -> usize {
        4 * self.wx
    }
    /// The variant's name, e.g. `flat3x32` for `family` "flat".
    fn name(self, family: &str) -> String {
        format!("{family}{}x{}", self.tm, self.cols())
    }
}

/// The flat tiles offered where the adapter is a CPU: 3, 4 or 6 rows by 8 or 16
/// invocations (one or two of llvmpipe's 8-wide SIMD rows). Rows are cheap (their
/// words of A have one address per workgroup) and each row reuses B's four loaded
/// columns, so more rows win on llvmpipe even past its 16 vector registers (6 rows
/// are 24 accumulators); small blocks keep even a 128×128 output at 64 workgroups
/// or more, at least two for each of llvmpipe's threads (one per core).
const FLAT_TILES: [FlatTile; 4] = [
    FlatTile { wx: 8, tm: 3 },
    FlatTile { wx: 8, tm: 4 },
    FlatTile { wx: 8, tm: 6 },
    FlatTile { wx: 16, tm: 4 },
];

/// The flat tiles whose words of A reach the rows' eight invocations by
/// `subgroupShuffle` (`matmul_flat_shuffle`), offered where llvmpipe's subgroups are
/// its 8-lane SIMD rows: Mesa 22.3's gallivm loads a storage word the workgroup
/// shares once per lane (its uniform-address path needs code outside every loop,
/// `lp_bld_nir_soa.c`), so each lane loads one word of A for eight k instead and a
/// shuffle with a constant index (one `shufflevector`) hands it to the others. With
/// A that cheap, B's loads set the pace: more rows reuse each, and spilled
/// accumulators cost less than those loads (forced one at a time on lavapipe, 2
/// cores, 1024³: 8 rows 14.7 GFLOP/s, 16 rows 17.8, 32 rows 23.5, 48 rows 26.1, 64
/// rows 24.5; the tiled 128×128 GEMM 10.9 and the plain flat tiles 7–8.5). Largest
/// first: the autotune's budget may stop before the last on a large product.
const SHUFFLE_TILES: [FlatTile; 4] = [
    FlatTile { wx: 8, tm: 48 },
    FlatTile { wx: 8, tm: 32 },
    FlatTile { wx: 8, tm: 16 },
    FlatTile { wx: 8, tm: 8 },
];

/// The size class of a dimension in the autotune's keys: the next power of two or
/// three quarters of it, whichever comes first (784 and 1000 tune apart, and 700 with
/// 784).
fn shape_bucket(d: usize) -> usize {
    let p = d.next_power_of_two();
    if p >= 4 && d <= p / 4 * 3 {
        p / 4 * 3
    } else {
        p
    }
}

/// A split product's epilogue (bias, activation) is split with it from this many
/// output words (~16 µs of work alone; handing half to the helper thread ~2 µs): an
/// LSTM's input projection of 50 steps at h512, 3.3 M words, 0.8 → 0.4 ms.
const EPILOGUE_SPLIT_WORDS: usize = 1 << 16;

/// Every tile's BK divides this, so K slices of a multiple of it split whole tiles.
const SPLIT_ALIGN: usize = 16;

/// Products below this many flops are not worth timing: the default tile runs.
const TUNE_FLOPS: usize = 1 << 20;

impl MatMulKernel {
    /// The CPU twin after its `count` products: the bias and map, then the fused tail.
    fn finish_cpu(&self, x: &[&[f32]], count: usize, out: &mut [&mut [f32]]) {
        let (m, n) = (self.m, self.n);
        let bias = if self.op.bias { Some(x[2]) } else { None };
        let act = self.op.act;
        if bias.is_some() || act.is_some() {
            let values = &mut out[0][..count * m * n];
            if count == 1 && values.len() >= EPILOGUE_SPLIT_WORDS && sgemm::splits(m, self.k, n) {
                // Split with the product: half of the rows on the helper thread.
                let (top, bottom) = values.split_at_mut(m / 2 * n);
                helper_thread::join(
                    || epilogue_cpu(bottom, n, bias, act),
                    || epilogue_cpu(top, n, bias, act),
                );
            } else {
                epilogue_cpu(values, n, bias, act);
            }
        }
        if let Some(tail) = &self.tail {
            // The maps' own CPU pass, over the product's values and the tail's inputs.
            let product = out[0][..m * n].to_vec();
            let mut strides = vec![vec![n, 1]];
            strides.extend(tail.same.iter().map(|&same| if same { vec![n, 1] } else { vec![0, 0] }));
            let maps = FusedKernel::new(&tail.expr, &[m, n], &strides);
            let mut reads = vec![&product[..]];
            reads.extend(&x[2 + self.op.bias as usize..]);
            maps.cpu(&reads, &mut [&mut out[0][..m * n]]);
        }
    }

    /// The untimed choice: the largest tile that still gives the GPU enough
    /// workgroups (for a batch: over all its products, among the tiles no larger than
    /// one product's output rounded up to a power of two).
    fn default_tile(&self) -> Tile {
        let outputs = self.m * self.n * self.count();
        let fits = |t: Tile| {
            self.batch.is_none()
                || (t.rows() <= self.m.next_power_of_two().max(32) && t.cols() <= self.n.next_power_of_two().max(32))
        };
        if outputs >= 1024 * 1024 && fits(TILES[2]) {
            TILES[2]
        } else if outputs >= 256 * 256 && fits(TILES[1]) {
            TILES[1]
        } else if outputs >= 128 * 128 && fits(TILES[0]) {
            TILES[0]
        } else {
            TILES[4]
        }
    }

    /// Products in one launch's batch (1 without one).
    fn count(&self) -> usize {
        self.batch.as_ref().map_or(1, Batch::count)
    }

    /// K slices for a product whose output is too small to fill a GPU (fewer than 16
    /// tiles of 64×64) but whose K is long: enough slices of at least 256 to reach
    /// about 64 workgroups. A function of the shape only; never for a batch.
    /// ([`FastPath::SplitK`] forced on: at least two slices where K allows; off: one.)
    fn splits(&self) -> usize {
        if self.batch.is_some() {
            return 1; // the batch fills the GPU; z is the batch
        }
        let tiles = self.m.div_ceil(64) * self.n.div_ceil(64);
        let auto = if tiles >= 16 || self.k < 512 {
            1
        } else {
            let want = (self.k / 256).min(64usize.div_ceil(tiles)).max(1);
            self.k.div_ceil(self.slice(want))
        };
        match fast_path::forced(FastPath::SplitK) {
            None => auto,
            Some(false) => 1,
            Some(true) => auto.max(self.k.div_ceil(self.slice(2))),
        }
    }

    /// K per slice when split `splits` ways.
    fn slice(&self, splits: usize) -> usize {
        self.k.div_ceil(splits).next_multiple_of(SPLIT_ALIGN)
    }

    /// Whether A and B can be loaded and the output stored as vec4 (their stored rows
    /// are a multiple of 4 long; buffers are bound from offset 0).
    /// ([`FastPath::Vec4`] forced off: scalar loads and stores.)
    fn vectors(&self) -> (bool, bool, bool) {
        let (m, k, n) = (self.m, self.k, self.n);
        if fast_path::forced(FastPath::Vec4) == Some(false) {
            return (false, false, false);
        }
        let va = if self.op.ta { m % 4 == 0 } else { k % 4 == 0 };
        let vb = if self.op.tb { k % 4 == 0 } else { n % 4 == 0 };
        (va, vb, n % 4 == 0)
    }

    fn variant(&self, tile: Tile, splits: usize) -> Variant {
        self.variant_of(
            |z0| self.gemm_pass(tile, splits, z0, Stages::One),
            tile.name(""),
            splits,
        )
    }

    /// [`MatMulKernel::variant`] in the two-stage form (`matmul_db`), named e.g.
    /// `db128x64k8`.
    fn double_variant(&self, tile: Tile, splits: usize) -> Variant {
        self.variant_of(
            |z0| self.gemm_pass(tile, splits, z0, Stages::Two),
            tile.name("db"),
            splits,
        )
    }

    /// [`MatMulKernel::double_variant`] warp-tiled ([`Stages::TwoWarpTiled`]), named
    /// e.g. `wt128x64k8`.
    fn warp_variant(&self, tile: Tile, splits: usize) -> Variant {
        self.variant_of(
            |z0| self.gemm_pass(tile, splits, z0, Stages::TwoWarpTiled),
            tile.name("wt"),
            splits,
        )
    }

    /// The passes `pass(z0)` over the batch, then split-K's slice sum where `splits > 1`.
    fn variant_of(&self, pass: impl Fn(usize) -> Wgsl, mut name: String, splits: usize) -> Variant {
        let mut passes: Vec<Wgsl> = (0..self.count()).step_by(MAX_BATCH_GROUPS).map(pass).collect();
        let mut scratch = 0;
        if splits > 1 {
            scratch = splits * self.m * self.n;
            name += &format!("s{splits}");
            let sum = Wgsl::new(
                SHADER,
                "matmul_split_sum",
                self.uniforms(splits, 0),
                Grid::Threads(self.m * self.n),
            )
            .defs(self.epilogue_defs())
            .in_bounds();
            passes.push(sum);
        }
        Variant::new(name, passes, scratch)
    }

    /// [`MatMulKernel::variant`] for a flat tile, named e.g. `flat3x32` (3 rows × 32
    /// columns per workgroup), or `shuf4x32` with A's words shuffled across the
    /// subgroup.
    fn flat_variant(&self, tile: FlatTile, splits: usize, shuffle: bool) -> Variant {
        let family = if shuffle { "shuf" } else { "flat" };
        self.variant_of(
            |z0| self.flat_pass(tile, splits, z0, shuffle),
            tile.name(family),
            splits,
        )
    }

    /// The sizes; for a batch also its axes (`bdims`), each operand's batch strides
    /// (`bsa`, `bsb`) and the first product of the launch (`z0`).
    fn uniforms(&self, splits: usize, z0: usize) -> Uniforms {
        let u = Uniforms::new()
            .u32("m", self.m)
            .u32("k", self.k)
            .u32("n", self.n)
            .u32("kc", self.slice(splits))
            .u32("splits", splits);
        match &self.batch {
            None => u,
            Some(b) => u
                .u32("nbatch", b.dims.len())
                .u32("z0", z0)
                .dims("bdims", &b.dims)
                .dims("bsa", &b.a)
                .dims("bsb", &b.b),
        }
    }

    /// `fn enter_tile(wid) -> vec2<u32>`: the row tile and K slice of workgroup `wid`;
    /// for a batch it also sets `base`, the words of A, B and the output before the
    /// matrices of product `wid.z + z0`.
    fn tile_defs(&self) -> &'static str {
        if self.batch.is_none() {
            return "fn enter_tile(wid: vec3<u32>) -> vec2<u32> { return wid.yz; }\n";
        }
        "var<private> base: vec3<u32>;\n\
         fn enter_tile(wid: vec3<u32>) -> vec2<u32> {\n\
         \x20   var z = wid.z + params.z0;\n\
         \x20   base = vec3<u32>(0u, 0u, z * params.m * params.n);\n\
         \x20   for (var d = params.nbatch; d > 0u; d--) {\n\
         \x20       let len = params_bdims(d - 1u);\n\
         \x20       let i = z % len;\n\
         \x20       z = z / len;\n\
         \x20       base.x += i * params_bsa(d - 1u);\n\
         \x20       base.y += i * params_bsb(d - 1u);\n\
         \x20   }\n\
         \x20   return vec2<u32>(wid.y, 0u);\n}\n"
    }

    /// `bias_at(c)` and `epilogue(x, i)`: the activation of `x` (bias added), then the
    /// tail's maps with its inputs read at output index `i`.
    fn epilogue_defs(&self) -> String {
        let mut defs = String::from(if self.op.bias {
            "fn bias_at(c: u32) -> f32 { return in2[c]; }\n"
        } else {
            "fn bias_at(c: u32) -> f32 { return 0.0; }\n"
        });
        let helpers = self.op.act.map_or("", UnaryOp::wgsl_helpers);
        defs += helpers;
        let act = self.op.act.map_or("x".to_string(), UnaryOp::wgsl);
        defs += &format!("fn epilogue_act(x: f32) -> f32 {{ return {act}; }}\n");
        match &self.tail {
            None => defs + "fn epilogue(x: f32, i: u32) -> f32 { return epilogue_act(x); }\n",
            Some(tail) => {
                let first = 2 + self.op.bias as usize;
                let loads: Vec<String> = std::iter::once("epilogue_act(x)".to_string())
                    .chain(
                        tail.same
                            .iter()
                            .enumerate()
                            .map(|(k, &same)| format!("in{}[{}]", first + k, if same { "i" } else { "0u" })),
                    )
                    .collect();
                defs + &expr_fn(&tail.expr, "epilogue(x: f32, i: u32)", &loads, &[helpers])
            }
        }
    }

    /// The tiled product: with `splits > 1`, partial sums of each K slice into the
    /// scratch buffer (`out1`), else the finished output; for a batch, products `z0..`
    /// (at most [`MAX_BATCH_GROUPS`]).
    fn gemm_pass(&self, tile: Tile, splits: usize, z0: usize, stages: Stages) -> Wgsl {
        let MatMul { ta, tb, .. } = self.op;
        let (va, vb, vo) = self.vectors();
        // An empty dimension counts as an edge: then nothing is loaded or stored.
        let edge_m = !self.m.is_multiple_of(tile.rows()) || self.m == 0;
        let edge_n = !self.n.is_multiple_of(tile.cols()) || self.n == 0;
        let edge_k = !self.k.is_multiple_of(tile.bk);
        let Tile { wx, wy, tm, tn, bk } = tile;
        let mut defs = format!(
            "const TA: bool = {ta};\nconst TB: bool = {tb};\nconst EDGE_K: bool = {edge_k};\n\
             const WX: u32 = {wx}u;\nconst WY: u32 = {wy}u;\nconst TM: u32 = {tm}u;\n\
             const TN: u32 = {tn}u;\nconst BK: u32 = {bk}u;\n"
        );
        // A is stored m×k (k×m when transposed), B k×n (n×k).
        let (a_rows, a_cols, a_edge) = if ta {
            ("k", "m", (edge_k, edge_m))
        } else {
            ("m", "k", (edge_m, edge_k))
        };
        let (b_rows, b_cols, b_edge) = if tb {
            ("n", "k", (edge_n, edge_k))
        } else {
            ("k", "n", (edge_k, edge_n))
        };
        let batched = self.batch.is_some();
        let base = |part: &'static str| if batched { part } else { "" };
        defs += self.tile_defs();
        let half = self.op.half;
        defs += &loader("load_a4", ("in0", base("base.x + "), half), va, a_rows, a_cols, a_edge);
        defs += &loader("load_b4", ("in1", base("base.y + "), half), vb, b_rows, b_cols, b_edge);
        defs += &self.epilogue_defs();
        defs += &storer(splits > 1, vo, edge_n, base("base.z + "));
        let entry = match stages {
            Stages::One => "matmul",
            Stages::Two | Stages::TwoWarpTiled => {
                defs += &double_mac(tile);
                defs += &place(stages == Stages::TwoWarpTiled);
                "matmul_db"
            }
        };
        self.pass_wgsl(entry, defs, (tile.rows(), tile.cols()), splits, z0)
    }

    /// A pass of `entry` with `defs`, its workgroups one per `rows × cols` tile of the
    /// output (per K slice, or per product of a batch from `z0`), its bindings' types:
    /// A and B, the bias, the epilogue's tail, the output, the split scratch.
    fn pass_wgsl(
        &self,
        entry: &'static str,
        defs: String,
        (rows, cols): (usize, usize),
        splits: usize,
        z0: usize,
    ) -> Wgsl {
        let (va, vb, vo) = self.vectors();
        let mut types = operand_types(va, vb, self.op.half);
        if self.op.bias {
            types.push("f32");
        }
        types.extend(self.tail.iter().flat_map(|t| t.same.iter().map(|_| "f32")));
        types.push(vec4_or_f32(vo));
        if splits > 1 {
            types.push(vec4_or_f32(vo));
        }
        let z = match self.batch {
            None => splits,
            Some(_) => (self.count() - z0).min(MAX_BATCH_GROUPS),
        };
        let grid = Grid::Tiles(self.n.div_ceil(cols), self.m.div_ceil(rows), z);
        Wgsl::new(SHADER, entry, self.uniforms(splits, z0), grid)
            .defs(defs)
            .types(types)
            .in_bounds()
    }
}

/// `fn place(lid, tid) -> vec2<u32>` of `matmul_db`: which invocation tile (x along
/// n, y along m; each TM × TN outputs) invocation `lid` (`tid` in the workgroup)
/// computes: `lid` itself, or (`warp_tiled`) each 32 consecutive invocations a
/// (32 / WARP_X) × WARP_X block of them, the blocks row-major over the workgroup — a
/// permutation of the WX × WY invocation tiles (WARP_TILES are checked to divide).
fn place(warp_tiled: bool) -> String {
    if !warp_tiled {
        return "fn place(lid: vec3<u32>, tid: u32) -> vec2<u32> { return lid.xy; }\n".into();
    }
    let (x, y) = (WARP_X, 32 / WARP_X);
    format!(
        "fn place(lid: vec3<u32>, tid: u32) -> vec2<u32> {{\n    \
         let warp = tid / 32u;\n    let lane = tid % 32u;\n    let per_row = WX / {x}u;\n    \
         return vec2<u32>((warp % per_row) * {x}u + lane % {x}u, (warp / per_row) * {y}u + lane / {x}u);\n}}\n"
    )
}

/// `fn mac(sa, sb, kn, ly, lx)` of `matmul_db`: the BK steps over one stage of the
/// tiles (A's stage from `sa`, B's from `sb`, rows `AS`/`BS` vec4s apart), unrolled
/// (WGSL compilers do not unroll), each invocation's TM × TN products per k, k in
/// order, steps at or past `kn` skipped (a ragged last slice).
fn double_mac(tile: Tile) -> String {
    let Tile { tm, tn, bk, .. } = tile;
    let (tm4, tn4) = (tm / 4, tn / 4);
    let mut s = String::from("fn mac(sa: u32, sb: u32, kn: u32, ly: u32, lx: u32) {\n");
    for kk in 0..bk {
        s += &format!("    if (!EDGE_K || {kk}u < kn) {{\n");
        for i in 0..tm4 {
            s += &format!("        let a{i} = a_tile[sa + {kk}u * AS + ly * TM4 + {i}u];\n");
        }
        for j in 0..tn4 {
            s += &format!("        let b{j} = b_tile[sb + {kk}u * BS + lx + {j}u * WX];\n");
        }
        for i in 0..tm {
            for j in 0..tn4 {
                let e = ["x", "y", "z", "w"][i % 4];
                s += &format!(
                    "        acc[{at}] = fma(vec4<f32>(a{q}.{e}), b{j}, acc[{at}]);\n",
                    at = i * tn4 + j,
                    q = i / 4
                );
            }
        }
        s += "    }\n";
    }
    s + "}\n"
}

impl MatMulKernel {
    /// The flat product (`matmul_flat`), as [`MatMulKernel::gemm_pass`] for a tile:
    /// `load_a1(row, k)` is one word of op(A), `load_b14(k, col)` words col..col+4 of
    /// row k of op(B); K is walked word by word, so it has no edge.
    fn flat_pass(&self, tile: FlatTile, splits: usize, z0: usize, shuffle: bool) -> Wgsl {
        let MatMul { ta, tb, .. } = self.op;
        let (va, vb, vo) = self.vectors();
        let edge_m = !self.m.is_multiple_of(tile.tm) || self.m == 0;
        let edge_n = !self.n.is_multiple_of(tile.cols()) || self.n == 0;
        let FlatTile { wx, tm } = tile;
        let mut defs = format!("const WX: u32 = {wx}u;\nconst TM: u32 = {tm}u;\n");
        let batched = self.batch.is_some();
        let base = |part: &'static str| if batched { part } else { "" };
        let half = self.op.half;
        let a = ("in0", base("base.x + "), half);
        let b = ("in1", base("base.y + "), half);
        defs += self.tile_defs();
        // op(A)[row, k], A stored m×k (k×m when transposed); four k of a row where
        // A is not transposed (k a multiple of 4, k + 4 ≤ K).
        defs += &if ta {
            word_loader("load_a", a, va, "k", "m", (false, edge_m))
                + "fn load_a1(row: u32, k: u32) -> f32 { return load_a(k, row); }\n"
        } else {
            word_loader("load_a1", a, va, "m", "k", (edge_m, false))
                + &loader("load_a4", a, va, "m", "k", (edge_m, false))
        };
        // op(B)[k, col..col+4], B stored k×n (n×k when transposed: four stored rows,
        // four k of each in `flat_step4`).
        defs += &if tb {
            word_loader("load_b", b, vb, "n", "k", (edge_n, false))
                + &loader("load_b4", b, vb, "n", "k", (edge_n, false))
                + "fn load_b14(k: u32, c: u32) -> vec4<f32> {\n\
                   \x20   return vec4<f32>(load_b(c, k), load_b(c + 1u, k), load_b(c + 2u, k), load_b(c + 3u, k));\n}\n"
        } else {
            loader("load_b14", b, vb, "k", "n", (false, edge_n))
        };
        defs += &flat_steps(tm, ta, tb, edge_m);
        if shuffle {
            defs += &shuffle_step(tm);
        }
        defs += &self.epilogue_defs();
        defs += &storer(splits > 1, vo, edge_n, base("base.z + "));
        let entry = if shuffle { "matmul_flat_shuffle" } else { "matmul_flat" };
        self.pass_wgsl(entry, defs, (tm, tile.cols()), splits, z0)
    }
}

/// The straight-line body of `matmul_flat` for `tm` rows: `struct Acc` (one vec4 of
/// four columns per row), `flat_step(acc, k, row0, col)` (one k),
/// `flat_step4(acc, k, row0, col)` (k..k+4, each row's four words of A and B's four
/// rows loaded first, then the fma in k order) and `flat_store(acc, row0, col, z)`.
fn flat_steps(tm: usize, ta: bool, tb: bool, edge_m: bool) -> String {
    let rows = 0..tm;
    let mut s = String::from("struct Acc {\n");
    for i in rows.clone() {
        s += &format!("    r{i}: vec4<f32>,\n");
    }
    s += "}\nfn flat_step(acc: Acc, k: u32, row0: u32, col: u32) -> Acc {\n\
          \x20   var r = acc;\n    let b = load_b14(k, col);\n";
    for i in rows.clone() {
        s += &format!("    r.r{i} = fma(vec4<f32>(load_a1(row0 + {i}u, k)), b, r.r{i});\n");
    }
    s += "    return r;\n}\nfn flat_step4(acc: Acc, k: u32, row0: u32, col: u32) -> Acc {\n    var r = acc;\n";
    for i in rows.clone() {
        s += &if ta {
            format!(
                "    let a{i} = vec4<f32>(load_a1(row0 + {i}u, k), load_a1(row0 + {i}u, k + 1u), \
                 load_a1(row0 + {i}u, k + 2u), load_a1(row0 + {i}u, k + 3u));\n"
            )
        } else {
            format!("    let a{i} = load_a4(row0 + {i}u, k);\n")
        };
    }
    if tb {
        for j in 0..4 {
            s += &format!("    let c{j} = load_b4(col + {j}u, k);\n");
        }
        for e in ["x", "y", "z", "w"] {
            s += &format!("    let b{e} = vec4<f32>(c0.{e}, c1.{e}, c2.{e}, c3.{e});\n");
        }
    } else {
        for (kk, e) in ["x", "y", "z", "w"].iter().enumerate() {
            s += &format!("    let b{e} = load_b14(k + {kk}u, col);\n");
        }
    }
    for e in ["x", "y", "z", "w"] {
        for i in rows.clone() {
            s += &format!("    r.r{i} = fma(vec4<f32>(a{i}.{e}), b{e}, r.r{i});\n");
        }
    }
    s += "    return r;\n}\nfn flat_store(acc: Acc, row0: u32, col: u32, z: u32) {\n";
    for i in rows {
        s += &if edge_m {
            format!("    if (row0 + {i}u < params.m) {{ store4(row0 + {i}u, col, z, acc.r{i}); }}\n")
        } else {
            format!("    store4(row0 + {i}u, col, z, acc.r{i});\n")
        };
    }
    s + "}\n"
}

/// `flat_step8(acc, k, row0, col, lane)` for `tm` rows: k..k+8, lane `lane` of the
/// subgroup loading word k + lane of each row of op(A), each k's word then shuffled
/// from its lane (a constant index), B's four words loaded per k, the fma in k order.
fn shuffle_step(tm: usize) -> String {
    let mut s =
        String::from("fn flat_step8(acc: Acc, k: u32, row0: u32, col: u32, lane: u32) -> Acc {\n    var r = acc;\n");
    for i in 0..tm {
        s += &format!("    let s{i} = load_a1(row0 + {i}u, k + lane);\n");
    }
    for kk in 0..8 {
        s += &format!("    let b{kk} = load_b14(k + {kk}u, col);\n");
        for i in 0..tm {
            s += &format!("    r.r{i} = fma(vec4<f32>(subgroupShuffle(s{i}, {kk}u)), b{kk}, r.r{i});\n");
        }
    }
    s + "    return r;\n}\n"
}

/// `fn name(row, col) -> f32`: the word at stored row `row`, column `col` of the
/// `rows × cols` matrix in `binding` (from `base`, as for [`loader`]), zero outside
/// it, checking only the edges the shape has (`edges`: rows, cols).
fn word_loader(
    name: &str,
    (binding, base, half): (&str, &str, bool),
    vector: bool,
    rows: &str,
    cols: &str,
    edges: (bool, bool),
) -> String {
    let mut out = Vec::new();
    if edges.0 {
        out.push(format!("row >= params.{rows}"));
    }
    if edges.1 {
        out.push(format!("col >= params.{cols}"));
    }
    let check = if out.is_empty() {
        String::new()
    } else {
        format!("    if ({}) {{ return 0.0; }}\n", out.join(" || "))
    };
    let read = if vector { "[w / 4u][w % 4u]" } else { "[w]" };
    let (open, close) = if half { ("f32(", ")") } else { ("", "") };
    format!(
        "fn {name}(row: u32, col: u32) -> f32 {{\n{check}\x20   let w = {base}row * params.{cols} + col;\n\x20   return {open}{binding}{read}{close};\n}}\n"
    )
}

/// `fn name(row, col) -> vec4<f32>`: words col..col+4 of stored row `row` (col a
/// multiple of 4) of the `rows × cols` matrix in `binding` that starts at `base`
/// (empty: at word 0; else an expression followed by ` + `), zero outside it; checks
/// only the edges the shape has (`edges`: rows, cols). One vec4 load when `vector`.
fn loader(
    name: &str,
    (binding, base, half): (&str, &str, bool),
    vector: bool,
    rows: &str,
    cols: &str,
    edges: (bool, bool),
) -> String {
    let (open4, open, close) = if half {
        ("vec4<f32>(", "f32(", ")")
    } else {
        ("", "", "")
    };
    let row_out = if edges.0 {
        format!("row >= params.{rows}")
    } else {
        "false".into()
    };
    if vector {
        let col_out = if edges.1 {
            format!("col >= params.{cols}")
        } else {
            "false".into()
        };
        format!(
            "fn {name}(row: u32, col: u32) -> vec4<f32> {{\n\
             \x20   if ({row_out} || {col_out}) {{ return vec4<f32>(); }}\n\
             \x20   return {open4}{binding}[({base}row * params.{cols} + col) / 4u]{close};\n}}\n"
        )
    } else {
        let col_in = if edges.1 {
            format!("col + e < params.{cols}")
        } else {
            "true".into()
        };
        format!(
            "fn {name}(row: u32, col: u32) -> vec4<f32> {{\n\
             \x20   var v = vec4<f32>();\n\
             \x20   if ({row_out}) {{ return v; }}\n\
             \x20   for (var e = 0u; e < 4u; e++) {{\n\
             \x20       if ({col_in}) {{ v[e] = {open}{binding}[{base}row * params.{cols} + col + e]{close}; }}\n\
             \x20   }}\n\
             \x20   return v;\n}}\n"
        )
    }
}

/// The binding types of A and B: four words at a time where vectorized, halves when
/// `half` (read through the loaders' widening).
fn operand_types(va: bool, vb: bool, half: bool) -> Vec<&'static str> {
    let ty = |v: bool| match (v, half) {
        (true, false) => "vec4<f32>",
        (false, false) => "f32",
        (true, true) => "vec4<f16>",
        (false, true) => "f16",
    };
    vec![ty(va), ty(vb)]
}

/// `vec4<f32>` or `f32`.
fn vec4_or_f32(vector: bool) -> &'static str {
    if vector {
        "vec4<f32>"
    } else {
        "f32"
    }
}

/// `fn store4(r, c, z, v)`: results r, c..c+4 (c a multiple of 4; those past n
/// dropped): finished (bias, epilogue) into `out0` (the matrix at `base`, as for
/// [`loader`]), or split-K's raw partial sums of slice z into `out1`; one vec4 store
/// when `vector`.
fn storer(split: bool, vector: bool, edge_n: bool, base: &str) -> String {
    let head = "fn store4(r: u32, c: u32, z: u32, v: vec4<f32>) {\n";
    match (split, vector) {
        (false, true) => format!(
            "{head}{}    let x = v + vec4<f32>(bias_at(c), bias_at(c + 1u), bias_at(c + 2u), bias_at(c + 3u));\n\
             \x20   let i = {base}r * params.n + c;\n\
             \x20   out0[i / 4u] = vec4<f32>(epilogue(x.x, i), epilogue(x.y, i + 1u), epilogue(x.z, i + 2u), epilogue(x.w, i + 3u));\n}}\n",
            if edge_n { "    if (c >= params.n) { return; }\n" } else { "" }
        ),
        (false, false) => format!(
            "{head}    for (var e = 0u; e < 4u; e++) {{\n\
             \x20       let i = {base}r * params.n + c + e;\n\
             \x20       if (c + e < params.n) {{ out0[i] = epilogue(v[e] + bias_at(c + e), i); }}\n\
             \x20   }}\n}}\n"
        ),
        (true, true) => format!(
            "{head}{}    out1[(z * params.m * params.n + r * params.n + c) / 4u] = v;\n}}\n",
            if edge_n { "    if (c >= params.n) { return; }\n" } else { "" }
        ),
        (true, false) => format!(
            "{head}    for (var e = 0u; e < 4u; e++) {{\n\
             \x20       if (c + e < params.n) {{ out1[z * params.m * params.n + r * params.n + c + e] = v[e]; }}\n\
             \x20   }}\n}}\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Op;
    use crate::tensor::DType;
    use crate::Device;

    #[test]
    fn an_epilogue_whose_gradient_needs_its_input_matches_the_unfused_graph() {
        let dev = Device::cpu();
        let leaf = |shape: &[usize], seed| Tensor::randn(shape, seed, &dev).unwrap().requires_grad().unwrap();
        let (a, b, bias) = (leaf(&[3, 4], 1), leaf(&[5, 4], 2), leaf(&[5], 3));
        let op = MatMul {
            ta: false,
            tb: true,
            bias: true,
            act: Some(UnaryOp::Gelu),
            half: false,
        };
        let inputs = vec![a.clone(), b.clone(), bias.clone()];
        let fused = Tensor::from_node(Op::MatMul(op), inputs, vec![3, 5], DType::F32);
        let plain = a.linear(&b, Some(&bias)).gelu();
        let (gf, gp) = (fused.sum().backward().unwrap(), plain.sum().backward().unwrap());
        assert_eq!(fused.to_vec().unwrap(), plain.to_vec().unwrap());
        for t in [&a, &b, &bias] {
            let (f, p) = (
                gf.get(t).unwrap().to_vec().unwrap(),
                gp.get(t).unwrap().to_vec().unwrap(),
            );
            assert!(f.iter().zip(&p).all(|(x, y)| (x - y).abs() < 1e-5), "{f:?} vs {p:?}");
        }
    }
}
