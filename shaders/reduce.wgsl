// Reductions over the middle axis of an [outer, len, inner] view, in a fixed order
// (deterministic run to run). `IS_MAX` selects max instead of sum.

fn combine(a: f32, b: f32) -> f32 {
    if (IS_MAX) { return max(a, b); }
    return a + b;
}

fn identity() -> f32 {
    if (IS_MAX) { return f32_neg_inf(); }
    return 0.0;
}

//#kernel reduce_rows
// inner == 1: one workgroup per chunk of a row: strided partial results in a fixed
// order, then a tree; writes [outer, chunks].
var<workgroup> partial: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let w = wid.x + wid.y * groups.x;
    let len = params.len;
    let chunk = params.chunk;
    let chunks = params.chunks;
    let live = w < params.outer * chunks;
    var acc = identity();
    if (live) {
        let row = w / chunks;
        let start = (w % chunks) * chunk;
        let end = min(start + chunk, len);
        for (var j = start + lid.x; j < end; j += 256u) {
            acc = combine(acc, in0[row * len + j]);
        }
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            partial[lid.x] = combine(partial[lid.x], partial[lid.x + s]);
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && live) { out0[w] = partial[0]; }
}

//#kernel reduce_rows_subgroups
// reduce_rows with subgroup operations (adapters with SUBGROUP): each subgroup
// combines its invocations' partial results, then invocation 0 combines the
// subgroups' results in subgroup order.
var<workgroup> partial: array<f32, 256>;
@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let w = wid.x + wid.y * groups.x;
    let len = params.len;
    let chunk = params.chunk;
    let chunks = params.chunks;
    let live = w < params.outer * chunks;
    var acc = identity();
    if (live) {
        let row = w / chunks;
        let start = (w % chunks) * chunk;
        let end = min(start + chunk, len);
        for (var j = start + lid.x; j < end; j += 256u) {
            acc = combine(acc, in0[row * len + j]);
        }
    }
    var total: f32;
    if (IS_MAX) { total = subgroupMax(acc); } else { total = subgroupAdd(acc); }
    if (lane == 0u) { partial[subgroup] = total; }
    workgroupBarrier();
    if (lid.x == 0u && live) {
        var all = partial[0];
        for (var s = 1u; s < subgroups; s++) {
            all = combine(all, partial[s]);
        }
        out0[w] = all;
    }
}

//#kernel reduce_cols
// inner > 1: one invocation per output, looping over len.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    let len = params.len;
    let inner = params.inner;
    if (i >= params.outer * inner) { return; }
    let o = i / inner;
    let k = i % inner;
    var acc = identity();
    for (var j = 0u; j < len; j++) {
        acc = combine(acc, in0[(o * len + j) * inner + k]);
    }
    out0[i] = acc;
}

//#kernel argmax
// First index of the maximum; writes u32 bits.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    let len = params.len;
    let inner = params.inner;
    if (i >= params.outer * inner) { return; }
    let o = i / inner;
    let k = i % inner;
    var best = in0[o * len * inner + k];
    var at = 0u;
    for (var j = 1u; j < len; j++) {
        let v = in0[(o * len + j) * inner + k];
        if (v > best) {
            best = v;
            at = j;
        }
    }
    out0[i] = bitcast<f32>(at);
}

//#kernel max_with_indices
// The maximum (out0) and the first index where it occurs (out1, u32 bits).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    let len = params.len;
    let inner = params.inner;
    if (i >= params.outer * inner) { return; }
    let o = i / inner;
    let k = i % inner;
    var best = in0[o * len * inner + k];
    var at = 0u;
    for (var j = 1u; j < len; j++) {
        let v = in0[(o * len + j) * inner + k];
        if (v > best) {
            best = v;
            at = j;
        }
    }
    out0[i] = best;
    out1[i] = bitcast<f32>(at);
}
