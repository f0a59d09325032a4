// Inverted dropout with a counter-based mask: element i is kept when the top 24 bits
// of Philox4x32-10 word i (counter ⌊i/4⌋, key = in1[0..2]) reach the threshold. The
// CPU twin is `rng::dropout_keeps`; both give the same bits for the same key.

//#kernel dropout

// 32×32 → 64-bit product as (hi, lo), from 16-bit halves (WGSL has no u64).
fn mul_hi_lo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let ll = a0 * b0;
    let lh = a0 * b1;
    let hl = a1 * b0;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let lo = (ll & 0xffffu) | (mid << 16u);
    let hi = a1 * b1 + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, lo);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r++) {
        let p0 = mul_hi_lo(0xD2511F53u, c.x);
        let p1 = mul_hi_lo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let key = vec2<u32>(bitcast<u32>(in1[0]), bitcast<u32>(in1[1]));
    let block = philox4x32_10(vec4<u32>(i / 4u, 0u, 0u, 0u), key);
    let w = block[i % 4u];
    out0[i] = select(0.0, in0[i] * params.scale, (w >> 8u) >= params.threshold);
}
