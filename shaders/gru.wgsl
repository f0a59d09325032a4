// Fused GRU cell, gates r, z, n (PyTorch's order), one invocation per (row, unit).
// in0: input projection, in1: hidden projection ([B, 3H] each); in2: h_prev [B, H].
// Uniform fields are named in src/ops/gru.rs.

fn at(b: u32, j: u32, k: u32) -> u32 {
    return b * 3u * params.hidden + k * params.hidden + j;
}

//#kernel gru_cell
// out0: h = (1 − z)·n + z·h_prev.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let u = flat_id(gid, groups);
    if (u >= params.n) { return; }
    let b = u / params.hidden;
    let j = u % params.hidden;
    let r = sigmoid_f(in0[at(b, j, 0u)] + in1[at(b, j, 0u)]);
    let z = sigmoid_f(in0[at(b, j, 1u)] + in1[at(b, j, 1u)]);
    let n = tanh_f(in0[at(b, j, 2u)] + r * in1[at(b, j, 2u)]);
    out0[u] = (1.0 - z) * n + z * in2[u];
}

//#kernel gru_cell_grad
// in3: dh. out0: d xg [B, 3H]; out1: d hg [B, 3H]; out2: d h_prev.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let u = flat_id(gid, groups);
    if (u >= params.n) { return; }
    let b = u / params.hidden;
    let j = u % params.hidden;
    let r = sigmoid_f(in0[at(b, j, 0u)] + in1[at(b, j, 0u)]);
    let z = sigmoid_f(in0[at(b, j, 1u)] + in1[at(b, j, 1u)]);
    let hn = in1[at(b, j, 2u)];
    let n = tanh_f(in0[at(b, j, 2u)] + r * hn);
    let h_prev = in2[u];
    let g = in3[u];
    let dn = g * (1.0 - z) * (1.0 - n * n);
    let dr = dn * hn * r * (1.0 - r);
    let dz = g * (h_prev - n) * z * (1.0 - z);
    out0[at(b, j, 0u)] = dr;
    out0[at(b, j, 1u)] = dz;
    out0[at(b, j, 2u)] = dn;
    out1[at(b, j, 0u)] = dr;
    out1[at(b, j, 1u)] = dz;
    out1[at(b, j, 2u)] = dn * r;
    out2[u] = g * z;
}
