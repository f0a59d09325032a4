// Cast family: f32 ↔ IEEE binary16 packed two to a 32-bit word (element 2i in the
// low half of word i). Both directions are integer arithmetic on the bits, so every
// adapter (and the CPU twin in src/ops/cast.rs) gives the same words: rounding to
// nearest, ties to even, subnormal halves kept, overflow to ±inf, NaN kept NaN
// (quiet, its top mantissa bits kept) — the `half` crate's conversion. WGSL's own
// `f16(x)` and `pack2x16float` may round either way, so they are not used here.

// The binary16 bits of an f32 (the `half` crate's f32_to_f16, step for step).
fn f32_to_f16_bits(value: f32) -> u32 {
    let x = bitcast<u32>(value);
    let sign = (x & 0x80000000u) >> 16u;
    let exp = x & 0x7f800000u;
    let man = x & 0x007fffffu;
    if (exp == 0x7f800000u) {
        var nan_bit = 0u;
        if (man != 0u) { nan_bit = 0x0200u; }
        return sign | 0x7c00u | nan_bit | (man >> 13u);
    }
    let half_exp = i32(exp >> 23u) - 127 + 15;
    if (half_exp >= 0x1f) { return sign | 0x7c00u; }
    if (half_exp <= 0) {
        if (14 - half_exp > 24) { return sign; }
        let m = man | 0x00800000u;
        var half_man = m >> u32(14 - half_exp);
        let round_bit = 1u << u32(13 - half_exp);
        if ((m & round_bit) != 0u && (m & (3u * round_bit - 1u)) != 0u) { half_man += 1u; }
        return sign | half_man;
    }
    let bits = sign | (u32(half_exp) << 10u) | (man >> 13u);
    let round_bit = 0x00001000u;
    if ((man & round_bit) != 0u && (man & (3u * round_bit - 1u)) != 0u) { return bits + 1u; }
    return bits;
}

// The f32 of binary16 bits (exact: every half is an f32).
fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let exp = (h >> 10u) & 0x1fu;
    let man = h & 0x03ffu;
    if (exp == 0x1fu) { return bitcast<f32>(sign | 0x7f800000u | (man << 13u)); }
    if (exp == 0u) {
        // ±0 or a subnormal: man · 2^-24, exact in f32.
        let v = f32(man) * 5.9604645e-8;
        return bitcast<f32>(sign | bitcast<u32>(v));
    }
    return bitcast<f32>(sign | ((exp + 112u) << 23u) | (man << 13u));
}

//#kernel to_f16
// One word per invocation: elements 2i and 2i + 1 (0 past the end).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.words) { return; }
    var word = f32_to_f16_bits(in0[2u * i]);
    if (2u * i + 1u < params.n) { word = word | (f32_to_f16_bits(in0[2u * i + 1u]) << 16u); }
    out0[i] = word;
}

//#kernel to_f32
// One element per invocation.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    out0[i] = f16_bits_to_f32((in0[i / 2u] >> (16u * (i % 2u))) & 0xffffu);
}
