// Elementwise maps. `unary_op(x)` and `binary_op(a, b)` are generated from the op
// table in src/graph/elementwise.rs.

//#kernel fill
// params: n, value
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i < p(0)) { out0[i] = pf(1u); }
}

//#kernel unary
// params: n
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i < p(0)) { out0[i] = unary_op(in0[i]); }
}

//#kernel binary
// params: n, rank, shape[6] (2..8), a_strides[6] (8..14), b_strides[6] (14..20)
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= p(0)) { return; }
    let rank = p(1);
    var rest = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = rank; d > 0u; d--) {
        let len = p(1u + d);
        let idx = rest % len;
        rest = rest / len;
        ia += idx * p(7u + d);
        ib += idx * p(13u + d);
    }
    out0[i] = binary_op(in0[ia], in1[ib]);
}

//#kernel one_hot
// params: n (rows · classes), classes; in0 holds u32 labels as f32 bits
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= p(0)) { return; }
    let label = bitcast<u32>(in0[i / p(1)]);
    out0[i] = select(0.0, 1.0, label == i % p(1));
}
