// Int8 family: symmetric int8 codes packed four to a word, and the int8 GEMM over
// them with i32 accumulation (`dot4I8Packed`: naga lowers it to OpSDot or to an
// exact polyfill). The CPU twins are in src/ops/quant.rs; the integers agree bit for
// bit.

//#kernel quantize_rows
// One word per invocation: four values of a row times 1/scale, rounded half to
// even, clamped to ±127, packed low byte first; columns past k are zero.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.m * params.words) { return; }
    let row = i / params.words;
    let t = i % params.words;
    var word = 0u;
    for (var b = 0u; b < 4u; b++) {
        let col = 4u * t + b;
        if (col < params.k) {
            let q = i32(clamp(round(in0[row * params.k + col] * params.inv_scale), -127.0, 127.0));
            word = word | ((bitcast<u32>(q) & 0xffu) << (8u * b));
        }
    }
    out0[i] = word;
}

//#kernel int8_matmul
// One output per invocation: the i32 sum of dot4I8Packed over the row's words, then
// acc · (x_scale · w_scale[j]) + bias[j].
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.m * params.n) { return; }
    let r = i / params.n;
    let j = i % params.n;
    var acc = 0i;
    for (var t = 0u; t < params.words; t++) {
        acc += dot4I8Packed(in0[r * params.words + t], in1[j * params.words + t]);
    }
    out0[i] = f32(acc) * (params.x_scale * in2[j]) + in3[j];
}

//#kernel int8_matmul_raw
// The same accumulators, written as their bits (u32 words): for exact comparisons.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.m * params.n) { return; }
    let r = i / params.n;
    let j = i % params.n;
    var acc = 0i;
    for (var t = 0u; t < params.words; t++) {
        acc += dot4I8Packed(in0[r * params.words + t], in1[j * params.words + t]);
    }
    out0[i] = bitcast<u32>(acc);
}

//#kernel f16_matmul
// One output per invocation: f32 x times half-precision weights (two per word, low
// half first, widened by the core `unpack2x16float`), summed in f32 in order of k,
// plus the bias.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.m * params.n) { return; }
    let r = i / params.n;
    let j = i % params.n;
    var acc = 0.0;
    for (var t = 0u; t < params.words; t++) {
        let w = unpack2x16float(in1[j * params.words + t]);
        let c = 2u * t;
        acc += in0[r * params.k + c] * w.x;
        if (c + 1u < params.k) {
            acc += in0[r * params.k + c + 1u] * w.y;
        }
    }
    out0[i] = acc + in2[j];
}
