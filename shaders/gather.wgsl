// Gather along one axis by u32 indices, and its deterministic adjoint. Tensors are
// viewed as [outer, len, inner]; indices (in1) are u32 bits in f32 words. Uniform
// fields are named in src/ops/gather.rs.

//#kernel gather
// out [outer, picks, inner] = in0[o, in1[m], k]; NaN for an index not below len.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let inner = params.inner;
    let k = i % inner;
    let m = (i / inner) % params.picks;
    let o = i / (inner * params.picks);
    let at = bitcast<u32>(in1[m]);
    var v = f32_nan();
    if (at < params.len) {
        v = in0[(o * params.len + at) * inner + k];
    }
    out0[i] = v;
}

//#kernel scatter_add
// out [outer, len, inner]: each element sums, in increasing m, the in0[o, m, k] whose
// index in1[m] is its row (the CPU twin adds in the same order: same bits).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let inner = params.inner;
    let k = i % inner;
    let row = (i / inner) % params.len;
    let o = i / (inner * params.len);
    var acc = 0.0;
    for (var m = 0u; m < params.picks; m++) {
        if (bitcast<u32>(in1[m]) == row) {
            acc = acc + in0[(o * params.picks + m) * inner + k];
        }
    }
    out0[i] = acc;
}
