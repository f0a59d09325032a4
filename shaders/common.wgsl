// Prepended to every kernel. The GPU backend adds, before this file, the bindings of
// the kernel at hand: `in0`, `in1`, … (read-only) and `out0`, `out1`, … (read-write),
// `array<f32>` (labels are u32 bits in f32 words) or `array<u32>` for kernels that
// only move words; the kernel's uniform struct, bound as `params` (fields named in
// its Rust family file, dims arrays read with `params_<name>(i)`); and generated
// definitions such as `unary_op`, `binary_op`, `TA`, `TB`, `epilogue`.

const WG: u32 = 256u;

// Infinities and NaN as run-time values: a constant expression that evaluates to one
// is a shader-creation error in WGSL (Chrome's Tint enforces it, naga lets it pass),
// and a `let` is not a constant expression.
fn f32_inf() -> f32 { let bits = 0x7f800000u; return bitcast<f32>(bits); }
fn f32_neg_inf() -> f32 { let bits = 0xff800000u; return bitcast<f32>(bits); }
fn f32_nan() -> f32 { let bits = 0x7fc00000u; return bitcast<f32>(bits); }

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

// tanh from exp(-2|x|), which never overflows; below |x| = 1/4, where 1 - e would
// cancel most of e's bits, its Taylor series (next term < 1e-8 relative).
fn tanh_f(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.25) {
        let x2 = x * x;
        return x * (1.0 + x2 * (-0.33333334 + x2 * (0.13333334 + x2 * (-0.053968254 + x2 * 0.021869488))));
    }
    let e = exp(-2.0 * a);
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// log(1 + x) for -0.3 < x < 1 as 2 atanh(s), s = x / (2 + x), by its series (next
// term < 1e-9 relative): 1 + x would round x's low bits away, and drivers' log may
// be off by 2^-21 absolute near 1 (Vulkan's bound; lavapipe's is of that order).
fn log1p_f(x: f32) -> f32 {
    if (x > -0.3 && x < 1.0) {
        let s = x / (2.0 + x);
        let s2 = s * s;
        let p = 0.33333334 + s2 * (0.2 + s2 * (0.14285715 + s2 * (0.11111111 + s2 * (0.09090909
            + s2 * (0.07692308 + s2 * (0.06666667 + s2 * 0.05882353))))));
        return 2.0 * s + 2.0 * s * s2 * p;
    }
    return log(1.0 + x);
}

// x^p with the real-valued results for negative x and integer p, as powf gives;
// small integer powers by multiplication (pow is exp2(p log2 x), off by many ulps).
fn pow_f(x: f32, e: f32) -> f32 {
    if (e == 0.0) { return 1.0; }
    if (e == 1.0) { return x; }
    if (e == 2.0) { return x * x; }
    if (e == 3.0) { return x * x * x; }
    if (e == -1.0) { return 1.0 / x; }
    if (x > 0.0) { return pow(x, e); }
    if (x == 0.0) { return select(f32_inf(), 0.0, e > 0.0); }
    if (fract(e) != 0.0) { return f32_nan(); }
    let m = pow(-x, e);
    return select(m, -m, fract(e * 0.5) != 0.0);
}
