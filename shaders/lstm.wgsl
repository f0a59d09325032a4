// Fused LSTM cell, gates i, f, g, o (PyTorch's order), one invocation per (row,
// unit). in0: input projection, in1: hidden projection ([B, 4H] each); in2: c_prev
// [B, H]. Uniform fields are named in src/ops/lstm.rs.

fn pre(b: u32, j: u32, k: u32) -> f32 {
    let at = b * 4u * params.hidden + k * params.hidden + j;
    return in0[at] + in1[at];
}

//#kernel lstm_cell
// out0: h = o·tanh(c); out1: c = f·c_prev + i·g.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let u = flat_id(gid, groups);
    if (u >= params.n) { return; }
    let b = u / params.hidden;
    let j = u % params.hidden;
    let i = sigmoid_f(pre(b, j, 0u));
    let f = sigmoid_f(pre(b, j, 1u));
    let g = tanh_f(pre(b, j, 2u));
    let o = sigmoid_f(pre(b, j, 3u));
    let c = f * in2[u] + i * g;
    out0[u] = o * tanh_f(c);
    out1[u] = c;
}

//#kernel lstm_cell_grad
// in3: dh, in4: dc. out0: the gradient of the pre-activations [B, 4H]; out1: dc_prev.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let u = flat_id(gid, groups);
    if (u >= params.n) { return; }
    let hidden = params.hidden;
    let b = u / hidden;
    let j = u % hidden;
    let i = sigmoid_f(pre(b, j, 0u));
    let f = sigmoid_f(pre(b, j, 1u));
    let g = tanh_f(pre(b, j, 2u));
    let o = sigmoid_f(pre(b, j, 3u));
    let c_prev = in2[u];
    let tc = tanh_f(f * c_prev + i * g);
    let dh = in3[u];
    let dct = in4[u] + dh * o * (1.0 - tc * tc);
    let row = b * 4u * hidden + j;
    out0[row] = dct * g * i * (1.0 - i);
    out0[row + hidden] = dct * c_prev * f * (1.0 - f);
    out0[row + 2u * hidden] = dct * i * (1.0 - g * g);
    out0[row + 3u * hidden] = dh * tc * o * (1.0 - o);
    out1[u] = dct * f;
}
