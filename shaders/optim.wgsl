// Fused in-place optimizer updates with torch.optim semantics. in0: grad; in1: hyper
// parameters; in2: number of steps already taken. out0: the parameter, then state.

//#kernel sgd
// hyper: lr, momentum, dampening, weight_decay, nesterov.
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
    if (in2[0] != 0.0) {
        buf = momentum * out1[i] + (1.0 - in1[2]) * g;
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
// hyper: lr, beta1, beta2, eps, weight_decay; out1: m, out2: v.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let lr = in1[0];
    let b1 = in1[1];
    let b2 = in1[2];
    let eps = in1[3];
    let wd = in1[4];
    let t = in2[0] + 1.0;
    var param = out0[i];
    var g = in0[i];
    if (DECOUPLED) {
        param = param * (1.0 - lr * wd);
    } else {
        g = g + wd * param;
    }
    let m = b1 * out1[i] + (1.0 - b1) * g;
    let v = b2 * out2[i] + (1.0 - b2) * g * g;
    out1[i] = m;
    out2[i] = v;
    let bc1 = 1.0 - pow(b1, t);
    let bc2_sqrt = sqrt(1.0 - pow(b2, t));
    let denom = sqrt(v) / bc2_sqrt + eps;
    out0[i] = param - (lr / bc1) * m / denom;
}

//#kernel increment
@compute @workgroup_size(1)
fn main() {
    out0[0] = out0[0] + 1.0;
}
