// Fused LSTM cell, gates i, f, g, o (PyTorch's order), one invocation per (row,
// unit). Forward: in0, in1: the input and hidden projections ([B, 4H] each), in2:
// c_prev [B, H]; out0: the gates' activations [B, 4H] (kept for the backward), out1:
// h, out2: c. Backward: in0: those activations, in1: c_prev, in2: dh, in3: dc.
// Uniform fields are named in src/ops/lstm.rs.

/// The word of gate `k` of unit `j` in row `b` of a [B, 4H] matrix.
fn gate_at(b: u32, j: u32, k: u32) -> u32 {
    return b * 4u * params.hidden + k * params.hidden + j;
}

//#kernel lstm_cell
// out0: sigma(a_i), sigma(a_f), tanh(a_g), sigma(a_o); out1: h = o·tanh(c);
// out2: c = f·c_prev + i·g.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let u = flat_id(gid, groups);
    if (u >= params.n) { return; }
    let b = u / params.hidden;
    let j = u % params.hidden;
    let at_i = gate_at(b, j, 0u);
    let at_f = gate_at(b, j, 1u);
    let at_g = gate_at(b, j, 2u);
    let at_o = gate_at(b, j, 3u);
    let i = sigmoid_f(in0[at_i] + in1[at_i]);
    let f = sigmoid_f(in0[at_f] + in1[at_f]);
    let g = tanh_f(in0[at_g] + in1[at_g]);
    let o = sigmoid_f(in0[at_o] + in1[at_o]);
    let c = f * in2[u] + i * g;
    out0[at_i] = i;
    out0[at_f] = f;
    out0[at_g] = g;
    out0[at_o] = o;
    out1[u] = o * tanh_f(c);
    out2[u] = c;
}

//#kernel lstm_cell_grad
// out0: the gradient of the pre-activations [B, 4H]; out1: dc_prev.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let u = flat_id(gid, groups);
    if (u >= params.n) { return; }
    let hidden = params.hidden;
    let b = u / hidden;
    let j = u % hidden;
    let i = in0[gate_at(b, j, 0u)];
    let f = in0[gate_at(b, j, 1u)];
    let g = in0[gate_at(b, j, 2u)];
    let o = in0[gate_at(b, j, 3u)];
    let c_prev = in1[u];
    let tc = tanh_f(f * c_prev + i * g);
    let dh = in2[u];
    let dct = in3[u] + dh * o * (1.0 - tc * tc);
    let row = b * 4u * hidden + j;
    out0[row] = dct * g * i * (1.0 - i);
    out0[row + hidden] = dct * c_prev * f * (1.0 - f);
    out0[row + 2u * hidden] = dct * i * (1.0 - g * g);
    out0[row + 3u * hidden] = dh * tc * o * (1.0 - o);
    out1[u] = dct * f;
}
