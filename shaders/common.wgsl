// Prepended to every kernel. The GPU backend adds, before this file, the bindings of
// the kernel at hand: `in0`, `in1`, … (read-only) and `out0`, `out1`, … (read-write),
// `array<f32>` (labels are u32 bits in f32 words) or `array<u32>` for kernels that
// only move words; the kernel's uniform struct, bound as `params` (fields named in
// its Rust family file, dims arrays read with `params_<name>(i)`); and generated
// definitions such as `unary_op`, `binary_op`, `TA`, `TB`, `epilogue`.

const WG: u32 = 256u;

// Invocation index of a 1-D launch folded into a 2-D grid (the adapter's limit of
// workgroups per dimension).
fn flat_id(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

fn sigmoid_f(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// tanh from exp(-2|x|), which never overflows.
fn tanh_f(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// x^p with the real-valued results for negative x and integer p, as powf gives.
fn pow_f(x: f32, e: f32) -> f32 {
    if (e == 0.0) { return 1.0; }
    if (x > 0.0) { return pow(x, e); }
    if (x == 0.0) { return select(bitcast<f32>(0x7f800000u), 0.0, e > 0.0); }
    if (fract(e) != 0.0) { return bitcast<f32>(0x7fc00000u); }
    let m = pow(-x, e);
    return select(m, -m, fract(e * 0.5) != 0.0);
}
