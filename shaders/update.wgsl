// Fused in-place optimizer updates with torch.optim semantics, several parameters per
// launch (multi-tensor apply). in1: the step's coefficients (UpdateKind::coefficients
// in src/ops/optim.rs, computed on the host in f64); in0, in2, in3, …: the gradients
// of parameters 0, 1, 2, …; out…: each parameter, then its state. Each workgroup
// updates 256 words of one parameter (a parameter's words take whole workgroups), so
// the generated `update_group(group, lane)` picks the parameter by workgroup, the same
// branch for every invocation of a workgroup, and applies the step function below.

// The coefficients are read into `coef` (generated `load_coefficients`) at the top of
// each kernel, outside every branch; `update_group` applies the step function to one
// word, or to each of four words loaded as a vec4 where the parameter's length allows.

// x, or 0 where |x| is below the smallest normal f32: how every optimizer stores a
// state value (see `flush_subnormal` in src/ops/update.rs; a GPU may flush subnormals
// itself, this makes every adapter and the CPU agree).
fn flush_subnormal(x: f32) -> f32 {
    return select(x, 0.0, abs(x) < 1.17549435e-38);
}

// SGD: in1 = lr, momentum, 1 - dampening, weight_decay, nesterov, first step.
fn sgd_step(grad: f32, param: f32) -> f32 {
    let g = grad + coef[3] * param;
    return param - coef[0] * g;
}

// SGD with a momentum buffer: the new parameter and buffer.
fn sgd_momentum_step(grad: f32, param: f32, buffer: f32) -> vec2<f32> {
    let lr = coef[0];
    let momentum = coef[1];
    var g = grad + coef[3] * param;
    var buf = g;
    if (coef[5] == 0.0) {
        buf = momentum * buffer + coef[2] * g;
    }
    buf = flush_subnormal(buf);
    if (coef[4] != 0.0) {
        g = g + momentum * buf;
    } else {
        g = buf;
    }
    return vec2<f32>(param - lr * g, buf);
}

// Adam / AdamW: in1 = 1 - beta1, beta2, 1 - beta2, eps, weight_decay,
// 1 - lr * weight_decay, -lr / (1 - beta1^t), sqrt(1 - beta2^t). PyTorch's order of
// operations (see `adam` in src/ops/optim.rs). The new parameter, m and v.
fn adam_step(grad: f32, param_in: f32, m_in: f32, v_in: f32) -> vec3<f32> {
    var param = param_in;
    var g = grad;
    if (DECOUPLED) {
        param = param * coef[5];
    } else {
        g = g + coef[4] * param;
    }
    let m = flush_subnormal(m_in + coef[0] * (g - m_in));
    let v = flush_subnormal(v_in * coef[1] + coef[2] * g * g);
    let denom = sqrt(v) / coef[7] + coef[3];
    return vec3<f32>(param + coef[6] * m / denom, m, v);
}

// RMSprop: in1 = lr, alpha, 1 - alpha, eps, weight_decay, momentum. PyTorch's order of
// operations (see `rmsprop_step` in src/ops/optim.rs). The new parameter,
// square_avg, momentum_buffer and grad_avg (the last two unused unless MOMENTUM,
// CENTERED).
fn rmsprop_step(grad: f32, param: f32, sa_in: f32, mb_in: f32, ga_in: f32) -> vec4<f32> {
    let g = grad + coef[4] * param;
    let sa = flush_subnormal(sa_in * coef[1] + coef[2] * g * g);
    var ga = ga_in;
    var avg = 0.0;
    if (CENTERED) {
        ga = flush_subnormal(ga_in + coef[2] * (g - ga_in));
        avg = sqrt(sa - ga * ga) + coef[3];
    } else {
        avg = sqrt(sa) + coef[3];
    }
    if (MOMENTUM) {
        let mb = flush_subnormal(mb_in * coef[5] + g / avg);
        return vec4<f32>(param + -coef[0] * mb, sa, mb, ga);
    }
    return vec4<f32>(param + -coef[0] * (g / avg), sa, mb_in, ga);
}

// rmsprop_step without the state buffers a configuration does not keep.
fn rmsprop_plain_step(grad: f32, param: f32, sa: f32) -> vec4<f32> {
    return rmsprop_step(grad, param, sa, 0.0, 0.0);
}
fn rmsprop_momentum_step(grad: f32, param: f32, sa: f32, mb: f32) -> vec4<f32> {
    return rmsprop_step(grad, param, sa, mb, 0.0);
}
fn rmsprop_centered_step(grad: f32, param: f32, sa: f32, ga: f32) -> vec4<f32> {
    return rmsprop_step(grad, param, sa, 0.0, ga);
}

// Adagrad: in1 = lr / (1 + (t - 1) lr_decay), weight_decay, eps. The new parameter and
// sum.
fn adagrad_step(grad: f32, param: f32, sum_in: f32) -> vec2<f32> {
    let g = grad + coef[1] * param;
    let sum = sum_in + g * g;
    return vec2<f32>(param + -coef[0] * (g / (sqrt(sum) + coef[2])), sum);
}

//#kernel sgd
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    load_coefficients();
    update_group(wid.x + wid.y * groups.x, lid.x);
}

//#kernel sgd_momentum
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    load_coefficients();
    update_group(wid.x + wid.y * groups.x, lid.x);
}

//#kernel adam
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    load_coefficients();
    update_group(wid.x + wid.y * groups.x, lid.x);
}

//#kernel rmsprop
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    load_coefficients();
    update_group(wid.x + wid.y * groups.x, lid.x);
}

//#kernel adagrad
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    load_coefficients();
    update_group(wid.x + wid.y * groups.x, lid.x);
}
