// Elementwise maps. `unary_op(x)` and `binary_op(a, b)` are generated from the op
// table in src/ops/elementwise.rs, as are the uniform fields named here.

//#kernel fill
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i < params.n) { out0[i] = params.value; }
}

//#kernel unary
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i < params.n) { out0[i] = unary_op(in0[i]); }
}

//#kernel binary
// Broadcasting through strides (0 along broadcast axes) over at most 6 axes.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    var rest = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = params.rank; d > 0u; d--) {
        let len = params_shape(d - 1u);
        let idx = rest % len;
        rest = rest / len;
        ia += idx * params_a_strides(d - 1u);
        ib += idx * params_b_strides(d - 1u);
    }
    out0[i] = binary_op(in0[ia], in1[ib]);
}

//#kernel one_hot
// in0 holds u32 labels as f32 bits; n = rows · classes.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let label = bitcast<u32>(in0[i / params.classes]);
    out0[i] = select(0.0, 1.0, label == i % params.classes);
}
