// Tiled GEMM: out0 = epilogue(op(A)·op(B) + bias), op reading a transposed operand in
// place. src/ops/matmul.rs generates, per launch:
// - the tile: WX×WY invocations, each computing TM rows × TN columns (TM, TN multiples
//   of 4), so a workgroup owns a BM×BN block (BM = WY·TM, BN = WX·TN); K is walked in
//   slices of BK through workgroup memory;
// - the loaders `load_a4(row, col)` / `load_b4(row, col)`: four consecutive words of a
//   stored row of A / B (col a multiple of 4), one vec4 load where the row length is a
//   multiple of 4, zero outside the matrix where the shape needs edge checks;
// - `store4(r, c, z, v)`: four results of row r from column c, with bias and
//   `epilogue(x, i)` (the activation, then any maps a plan fused after the product,
//   reading their other inputs at output index i), or (split-K) the raw partial sums of K slice z into the scratch buffer;
// - TA, TB (operands stored transposed), EDGE_K (K not a multiple of BK);
// - `enter_tile(wid)`: the workgroup's row tile and K slice (wid.y, wid.z); a batched
//   launch (operands with leading axes) has the product on z instead, and sets the
//   private `base` (words of A, B and the output before that product's matrices),
//   which its loaders and `store4` add.
// Every output is one chain of fma over k in ascending order from 0.0, whatever the
// tile: all tiles give the same bits (the autotune picks among them by speed only).

//#kernel matmul
const BM: u32 = WY * TM;
const BN: u32 = WX * TN;
const BM4: u32 = BM / 4u;
const BN4: u32 = BN / 4u;
const TM4: u32 = TM / 4u;
const TN4: u32 = TN / 4u;
const BK4: u32 = BK / 4u;
const THREADS: u32 = WX * WY;

var<workgroup> a_tile: array<vec4<f32>, BK * BM4>; // [BK][BM]: A's slice, transposed
var<workgroup> b_tile: array<vec4<f32>, BK * BN4>; // [BK][BN]

@compute @workgroup_size(WX, WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tile = enter_tile(wid);
    let row0 = tile.x * BM;
    let col0 = wid.x * BN;
    let k_begin = tile.y * params.kc;
    let k_end = min(params.k, k_begin + params.kc);
    let tid = lid.y * WX + lid.x;
    var acc: array<vec4<f32>, TM * TN4>;

    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        // Neighbouring invocations load neighbouring quads of a stored row.
        for (var q = tid; q < BM * BK4; q += THREADS) {
            if (TA) { // A stored K×M: quads along m
                a_tile[q] = load_a4(k0 + q / BM4, row0 + 4u * (q % BM4));
            } else { // A stored M×K: quads along k, spread over four rows of the tile
                let r = q / BK4;
                let kk = 4u * (q % BK4);
                let v = load_a4(row0 + r, k0 + kk);
                for (var e = 0u; e < 4u; e++) {
                    a_tile[(kk + e) * BM4 + r / 4u][r % 4u] = v[e];
                }
            }
        }
        for (var q = tid; q < BN * BK4; q += THREADS) {
            if (TB) { // B stored N×K: quads along k
                let c = q / BK4;
                let kk = 4u * (q % BK4);
                let v = load_b4(col0 + c, k0 + kk);
                for (var e = 0u; e < 4u; e++) {
                    b_tile[(kk + e) * BN4 + c / 4u][c % 4u] = v[e];
                }
            } else { // B stored K×N: quads along n
                b_tile[q] = load_b4(k0 + q / BN4, col0 + 4u * (q % BN4));
            }
        }
        workgroupBarrier();
        var kn = BK;
        if (EDGE_K) { kn = min(BK, k_end - k0); }
        for (var kk = 0u; kk < kn; kk++) {
            var a: array<vec4<f32>, TM4>;
            var b: array<vec4<f32>, TN4>;
            for (var i = 0u; i < TM4; i++) { a[i] = a_tile[kk * BM4 + lid.y * TM4 + i]; }
            for (var j = 0u; j < TN4; j++) { b[j] = b_tile[kk * BN4 + lid.x + j * WX]; }
            for (var i = 0u; i < TM; i++) {
                let ai = vec4<f32>(a[i / 4u][i % 4u]);
                for (var j = 0u; j < TN4; j++) {
                    acc[i * TN4 + j] = fma(ai, b[j], acc[i * TN4 + j]);
                }
            }
        }
        workgroupBarrier();
    }

    // Row r of the tile is invocation row lid.y's TM consecutive rows; its columns are
    // quads strided by WX, so a row's stores from neighbouring invocations are adjacent.
    for (var i = 0u; i < TM; i++) {
        let r = row0 + lid.y * TM + i;
        if (r >= params.m) { break; }
        for (var j = 0u; j < TN4; j++) {
            store4(r, col0 + 4u * (lid.x + j * WX), tile.y, acc[i * TN4 + j]);
        }
    }
}

//#kernel matmul_split_sum
// Split-K's second pass: the partial sums of the K slices (out1, [splits][m][n]) added
// in slice order, then bias and epilogue, one invocation per output.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    let mn = params.m * params.n;
    if (i >= mn) { return; }
    var s = out1[i];
    for (var z = 1u; z < params.splits; z++) {
        s += out1[z * mn + i];
    }
    out0[i] = epilogue(s + bias_at(i % params.n), i);
}

//#kernel matmul_flat
// The GEMM for adapters that are CPUs (llvmpipe): no workgroup memory, no barrier.
// A workgroup is WX invocations side by side along n, all on the same TM rows, so
// every read of A has the same index in every invocation of the workgroup; each
// invocation keeps TM vec4 accumulators (`Acc`: TM rows × 4 columns) and walks its K
// slice four k at a time (`flat_step4`, straight-line code generated by
// src/ops/matmul.rs), then one at a time (`flat_step`). The same chain of fma over k
// in order as `matmul`.
@compute @workgroup_size(WX)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tile = enter_tile(wid);
    let row0 = tile.x * TM;
    let col = 4u * (wid.x * WX + lid.x);
    let k_begin = tile.y * params.kc;
    let k_end = min(params.k, k_begin + params.kc);
    var acc: Acc;
    var k = k_begin;
    for (; k + 4u <= k_end; k += 4u) {
        acc = flat_step4(acc, k, row0, col);
    }
    for (; k < k_end; k++) {
        acc = flat_step(acc, k, row0, col);
    }
    flat_store(acc, row0, col, tile.y);
}

//#kernel matmul_flat_shuffle
// matmul_flat where the workgroup is one subgroup of eight lanes (llvmpipe): eight k at
// a time, each lane loads one word of A per row and `flat_step8` shuffles each k's
// word from its lane to all (A's words cost one load per lane per eight k instead of
// one per k). The same chain of fma over k in order.
@compute @workgroup_size(WX)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let tile = enter_tile(wid);
    let row0 = tile.x * TM;
    let col = 4u * (wid.x * WX + lid.x);
    let k_begin = tile.y * params.kc;
    let k_end = min(params.k, k_begin + params.kc);
    var acc: Acc;
    var k = k_begin;
    for (; k + 8u <= k_end; k += 8u) {
        acc = flat_step8(acc, k, row0, col, lane);
    }
    for (; k < k_end; k++) {
        acc = flat_step(acc, k, row0, col);
    }
    flat_store(acc, row0, col, tile.y);
}

//#kernel matmul_db
// The tiled GEMM in two stages, for GPUs: the K slice after the current one is loaded
// from memory into registers while the current one is multiplied from workgroup
// memory (`mac`, generated with the k loop unrolled), then stored to the other stage;
// one barrier per slice. Which TM × TN outputs an invocation owns, `place(lid, tid)`
// (generated too) says: its own place, or warp-tiled. Rows of the stages are padded
// by one vec4 (AS, BS) against bank conflicts; workgroups take their tiles in groups
// of GROUP row tiles (each group sweeps the column tiles), so neighbouring workgroups
// share rows of A and columns of B in cache. The same chain of fma over k in order as
// `matmul`.
const BM: u32 = WY * TM;
const BN: u32 = WX * TN;
const BM4: u32 = BM / 4u;
const BN4: u32 = BN / 4u;
const TM4: u32 = TM / 4u;
const TN4: u32 = TN / 4u;
const BK4: u32 = BK / 4u;
const THREADS: u32 = WX * WY;
const AS: u32 = BM4 + 1u;
const BS: u32 = BN4 + 1u;
const A_QUADS: u32 = (BM * BK4 + THREADS - 1u) / THREADS; // quads of A each invocation moves per slice
const B_QUADS: u32 = (BN * BK4 + THREADS - 1u) / THREADS;
const GROUP: u32 = 8u;

var<workgroup> a_tile: array<vec4<f32>, 2u * BK * AS>; // two stages of [BK][BM (+4)]
var<workgroup> b_tile: array<vec4<f32>, 2u * BK * BS>; // two stages of [BK][BN (+4)]
var<private> acc: array<vec4<f32>, TM * TN4>;
var<private> ra: array<vec4<f32>, A_QUADS>;
var<private> rb: array<vec4<f32>, B_QUADS>;

// Quad q of the slice at k0: A's (TA: along m; else along k of one row), B's.
fn fetch(k0: u32, row0: u32, col0: u32, tid: u32) {
    for (var t = 0u; t < A_QUADS; t++) {
        let q = tid + t * THREADS;
        if (q >= BM * BK4) { break; }
        if (TA) {
            ra[t] = load_a4(k0 + q / BM4, row0 + 4u * (q % BM4));
        } else {
            ra[t] = load_a4(row0 + q / BK4, k0 + 4u * (q % BK4));
        }
    }
    for (var t = 0u; t < B_QUADS; t++) {
        let q = tid + t * THREADS;
        if (q >= BN * BK4) { break; }
        if (TB) {
            rb[t] = load_b4(col0 + q / BK4, k0 + 4u * (q % BK4));
        } else {
            rb[t] = load_b4(k0 + q / BN4, col0 + 4u * (q % BN4));
        }
    }
}

// The fetched quads into stage `stage` ([k][m] and [k][n], transposed where stored
// the other way).
fn stash(stage: u32, tid: u32) {
    let a0 = stage * BK * AS;
    let b0 = stage * BK * BS;
    for (var t = 0u; t < A_QUADS; t++) {
        let q = tid + t * THREADS;
        if (q >= BM * BK4) { break; }
        if (TA) {
            a_tile[a0 + (q / BM4) * AS + q % BM4] = ra[t];
        } else {
            let r = q / BK4;
            let kk = 4u * (q % BK4);
            for (var e = 0u; e < 4u; e++) {
                a_tile[a0 + (kk + e) * AS + r / 4u][r % 4u] = ra[t][e];
            }
        }
    }
    for (var t = 0u; t < B_QUADS; t++) {
        let q = tid + t * THREADS;
        if (q >= BN * BK4) { break; }
        if (TB) {
            let c = q / BK4;
            let kk = 4u * (q % BK4);
            for (var e = 0u; e < 4u; e++) {
                b_tile[b0 + (kk + e) * BS + c / 4u][c % 4u] = rb[t][e];
            }
        } else {
            b_tile[b0 + (q / BN4) * BS + q % BN4] = rb[t];
        }
    }
}

@compute @workgroup_size(WX, WY)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let tile = enter_tile(wid);
    // Grouped order: GROUP row tiles sweep the column tiles together.
    let pid = tile.x * groups.x + wid.x;
    let per_group = GROUP * groups.x;
    let first = (pid / per_group) * GROUP;
    let size = min(groups.y - first, GROUP);
    let row_tile = first + (pid % per_group) % size;
    let col_tile = (pid % per_group) / size;
    let row0 = row_tile * BM;
    let col0 = col_tile * BN;
    let k_begin = tile.y * params.kc;
    let k_end = min(params.k, k_begin + params.kc);
    let tid = lid.y * WX + lid.x;
    let at = place(lid, tid);

    var stage = 0u;
    if (k_begin < k_end) {
        fetch(k_begin, row0, col0, tid);
        stash(0u, tid);
    }
    workgroupBarrier();
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        let more = k0 + BK < k_end;
        if (more) { fetch(k0 + BK, row0, col0, tid); }
        var kn = BK;
        if (EDGE_K) { kn = min(BK, k_end - k0); }
        mac(stage * BK * AS, stage * BK * BS, kn, at.y, at.x);
        if (more) { stash(1u - stage, tid); }
        stage = 1u - stage;
        workgroupBarrier();
    }

    for (var i = 0u; i < TM; i++) {
        let r = row0 + at.y * TM + i;
        if (r >= params.m) { break; }
        for (var j = 0u; j < TN4; j++) {
            store4(r, col0 + 4u * (at.x + j * WX), tile.y, acc[i * TN4 + j]);
        }
    }
}
