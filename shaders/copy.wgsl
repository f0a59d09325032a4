// Strided copies: permutations and broadcasts (zero strides), one invocation per
// output element.

//#kernel strided
// params: n, rank, shape[6] (2..8), in_strides[6] (8..14)
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= p(0)) { return; }
    var rest = i;
    var src = 0u;
    for (var d = p(1); d > 0u; d--) {
        let len = p(1u + d);
        src += (rest % len) * p(7u + d);
        rest = rest / len;
    }
    out0[i] = in0[src];
}
