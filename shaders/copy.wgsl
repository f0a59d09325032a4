// Copies that move words (bindings are array<u32>, so label bits are kept): strided
// reads (permute, expand, narrow), padding and region writes (cat). One invocation
// per element moved. Uniform fields are named in src/ops/copy.rs.

//#kernel strided
// out[i] = in[offset + Σ idx_d · in_strides_d] over at most 6 axes.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    var rest = i;
    var src = params.offset;
    for (var d = params.rank; d > 0u; d--) {
        let len = params_shape(d - 1u);
        src += (rest % len) * params_in_strides(d - 1u);
        rest = rest / len;
    }
    out0[i] = in0[src];
}

//#kernel pad
// out [outer, out_len, inner] = in [outer, len, inner] from `before` along the middle
// axis, zeros elsewhere.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let inner = params.inner;
    let k = i % inner;
    let l = (i / inner) % params.out_len;
    let o = i / (inner * params.out_len);
    var v = 0u;
    if (l >= params.before && l < params.before + params.len) {
        v = in0[(o * params.len + l - params.before) * inner + k];
    }
    out0[i] = v;
}

//#kernel cat
// in [outer, len, inner] into out [outer, out_len, inner] from `offset` along the
// middle axis; the rest of out is left as it is.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let inner = params.inner;
    let k = i % inner;
    let l = (i / inner) % params.len;
    let o = i / (inner * params.len);
    out0[(o * params.out_len + params.offset + l) * inner + k] = in0[i];
}
