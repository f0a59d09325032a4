// Convolution as an implicit GEMM: out = A·B with neither operand materialized. Each
// pass (src/ops/conv.rs) is a GEMM of params.m × params.k by params.k × params.n per
// group (the group is the grid's z); its section defines how an element of A and of B
// is read from the convolution's tensors (`load_a(g, row, k)`, `load_b(g, k, col)`)
// and where a result goes (`store(g, row, col, v)`):
// - conv_forward:     y[n, o, p]   = Σ_(c,ky,kx) w[o, c, ky, kx] · x[n, c, tap(p, ky, kx)] (+ bias[o])
// - conv_input_grad:  dx[n, c, q]  = Σ_(o,ky,kx) w[o, c, ky, kx] · dy[n, o, p] where q = tap(p, ky, kx)
// - conv_weight_grad: dw[o, c, kk] = Σ_(n,p) dy[n, o, p] · x[n, c, tap(p, kk)]
// Geometry (named uniforms): batch, c_in, c_out, cg (= c_in / groups), og (= c_out /
// groups), h, w (input), oh, ow (output), kh, kw, stride/padding/dilation per axis
// (sy, sx, py, px, dy, dx). The tile constants WX, WY, TM, TN, BK, `bias_at(o)` and
// `epilogue(x)` (the forward's activation)
// are generated. Every output is one chain of fma over k in ascending order from
// 0.0 (a tile's zero padding past k adds +0.0), so every tile gives the same bits.

const BM: u32 = WY * TM;
const BN: u32 = WX * TN;
const THREADS: u32 = WX * WY;

var<workgroup> a_tile: array<f32, BK * BM>; // [BK][BM]
var<workgroup> b_tile: array<f32, BK * BN>; // [BK][BN]

// x[n, ch, tap] for output pixel p and kernel offset kk = ky·kw + kx, 0 in the padding.
fn x_at(n: u32, ch: u32, p: u32, kk: u32) -> f32 {
    let iy = i32((p / params.ow) * params.sy + (kk / params.kw) * params.dy) - i32(params.py);
    let ix = i32((p % params.ow) * params.sx + (kk % params.kw) * params.dx) - i32(params.px);
    if (iy < 0 || ix < 0 || iy >= i32(params.h) || ix >= i32(params.w)) { return 0.0; }
    return in1[((n * params.c_in + ch) * params.h + u32(iy)) * params.w + u32(ix)];
}

fn gemm(wid: vec3<u32>, lid: vec3<u32>) {
    let g = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let tid = lid.y * WX + lid.x;
    var acc: array<f32, TM * TN>;
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        // Neighbouring invocations read neighbouring k of A and columns of B.
        for (var q = tid; q < BM * BK; q += THREADS) {
            let r = q / BK;
            let kk = q % BK;
            var v = 0.0;
            if (row0 + r < params.m && k0 + kk < params.k) { v = load_a(g, row0 + r, k0 + kk); }
            a_tile[kk * BM + r] = v;
        }
        for (var q = tid; q < BN * BK; q += THREADS) {
            let kk = q / BN;
            let c = q % BN;
            var v = 0.0;
            if (col0 + c < params.n && k0 + kk < params.k) { v = load_b(g, k0 + kk, col0 + c); }
            b_tile[kk * BN + c] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, TM>;
            var b: array<f32, TN>;
            for (var i = 0u; i < TM; i++) { a[i] = a_tile[kk * BM + lid.y * TM + i]; }
            for (var j = 0u; j < TN; j++) { b[j] = b_tile[kk * BN + lid.x + j * WX]; }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] = fma(a[i], b[j], acc[i * TN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    // Columns strided by WX: a row's stores from neighbouring invocations are adjacent.
    for (var i = 0u; i < TM; i++) {
        let r = row0 + lid.y * TM + i;
        if (r >= params.m) { break; }
        for (var j = 0u; j < TN; j++) {
            let c = col0 + lid.x + j * WX;
            if (c < params.n) { store(g, r, c, acc[i * TN + j]); }
        }
    }
}

//#kernel conv_forward
// in0 = w [c_out, cg, kh, kw], in1 = x, (in2 = bias); out0 = y. Rows: o in the group;
// k: (c, ky, kx); columns: (n, p).
fn load_a(g: u32, row: u32, k: u32) -> f32 {
    return in0[(g * params.og + row) * params.k + k];
}

fn load_b(g: u32, k: u32, col: u32) -> f32 {
    let taps = params.kh * params.kw;
    let pixels = params.oh * params.ow;
    return x_at(col / pixels, g * params.cg + k / taps, col % pixels, k % taps);
}

fn store(g: u32, row: u32, col: u32, v: f32) {
    let pixels = params.oh * params.ow;
    let o = g * params.og + row;
    out0[((col / pixels) * params.c_out + o) * pixels + col % pixels] = epilogue(v + bias_at(o));
}

@compute @workgroup_size(WX, WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(wid, lid);
}

//#kernel conv_input_grad
// in0 = dy [batch, c_out, oh, ow], in1 = w; out0 = dx. Rows: c in the group; k: (o,
// ky, kx); columns: (n, input pixel q). dy[n, o, p] reaches q through tap (ky, kx)
// when q + padding − offset is a multiple of the stride inside the output.
fn load_a(g: u32, row: u32, k: u32) -> f32 {
    let taps = params.kh * params.kw;
    return in1[((g * params.og + k / taps) * params.cg + row) * taps + k % taps];
}

fn load_b(g: u32, k: u32, col: u32) -> f32 {
    let taps = params.kh * params.kw;
    let in_pixels = params.h * params.w;
    let n = col / in_pixels;
    let q = col % in_pixels;
    let kk = k % taps;
    let ty = i32(q / params.w + params.py) - i32((kk / params.kw) * params.dy);
    let tx = i32(q % params.w + params.px) - i32((kk % params.kw) * params.dx);
    if (ty < 0 || tx < 0) { return 0.0; }
    let uy = u32(ty);
    let ux = u32(tx);
    if (uy % params.sy != 0u || ux % params.sx != 0u) { return 0.0; }
    let oy = uy / params.sy;
    let ox = ux / params.sx;
    if (oy >= params.oh || ox >= params.ow) { return 0.0; }
    let o = g * params.og + k / taps;
    return in0[((n * params.c_out + o) * params.oh + oy) * params.ow + ox];
}

fn store(g: u32, row: u32, col: u32, v: f32) {
    let in_pixels = params.h * params.w;
    out0[((col / in_pixels) * params.c_in + g * params.cg + row) * in_pixels + col % in_pixels] = v;
}

@compute @workgroup_size(WX, WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(wid, lid);
}

//#kernel conv_weight_grad
// in0 = dy, in1 = x; out0 = dw [c_out, cg, kh, kw]. Rows: o in the group; k: (n, p);
// columns: (c, ky, kx).
fn load_a(g: u32, row: u32, k: u32) -> f32 {
    let pixels = params.oh * params.ow;
    return in0[((k / pixels) * params.c_out + g * params.og + row) * pixels + k % pixels];
}

fn load_b(g: u32, k: u32, col: u32) -> f32 {
    let taps = params.kh * params.kw;
    let pixels = params.oh * params.ow;
    return x_at(k / pixels, g * params.cg + col / taps, k % pixels, col % taps);
}

fn store(g: u32, row: u32, col: u32, v: f32) {
    out0[(g * params.og + row) * params.n + col] = v;
}

@compute @workgroup_size(WX, WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm(wid, lid);
}
