// Fused in-place optimizer updates with torch.optim semantics. in0: grad; in1: the
// step's coefficients (UpdateKind::coefficients in src/ops/optim.rs, computed on the
// host in f64). out0: the parameter, then its state.

//#kernel sgd
// in1: lr, momentum, 1 - dampening, weight_decay, nesterov, first step.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let g = in0[i] + in1[3] * out0[i];
    out0[i] = out0[i] - in1[0] * g;
}

//#kernel sgd_momentum
// out1: momentum buffer.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let lr = in1[0];
    let momentum = in1[1];
    var g = in0[i] + in1[3] * out0[i];
    var buf = g;
    if (in1[5] == 0.0) {
        buf = momentum * out1[i] + in1[2] * g;
    }
    out1[i] = buf;
    if (in1[4] != 0.0) {
        g = g + momentum * buf;
    } else {
        g = buf;
    }
    out0[i] = out0[i] - lr * g;
}

//#kernel adam
// in1: 1 - beta1, beta2, 1 - beta2, eps, weight_decay, 1 - lr * weight_decay,
// -lr / (1 - beta1^t), sqrt(1 - beta2^t); out1: m, out2: v. PyTorch's order of
// operations (see `adam` in src/ops/optim.rs).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    var param = out0[i];
    var g = in0[i];
    if (DECOUPLED) {
        param = param * in1[5];
    } else {
        g = g + in1[4] * param;
    }
    let m = out1[i] + in1[0] * (g - out1[i]);
    let v = out2[i] * in1[1] + in1[2] * g * g;
    out1[i] = m;
    out2[i] = v;
    let denom = sqrt(v) / in1[7] + in1[3];
    out0[i] = param + in1[6] * m / denom;
}
