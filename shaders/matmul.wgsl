// Tiled GEMM: out0 = act(op(A)·op(B) + bias). A 64×64 output tile per workgroup of
// 16×16 invocations, each computing 4×4 outputs strided by 16 (conflict-free shared
// reads, coalesced writes); K is walked in slices of 16 through workgroup memory.
// `TA`/`TB` read a transposed operand in place; `bias_at` and `act` are the
// generated epilogue. params: M, K, N

const TILE: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [BK][TILE]
var<workgroup> b_tile: array<f32, 1024>; // [BK][TILE]

// Logical A[r][c] (M×K), zero outside.
fn load_a(r: u32, c: u32, m: u32, k: u32) -> f32 {
    if (r >= m || c >= k) { return 0.0; }
    if (TA) { return in0[c * m + r]; }
    return in0[r * k + c];
}

// Logical B[r][c] (K×N), zero outside.
fn load_b(r: u32, c: u32, k: u32, n: u32) -> f32 {
    if (r >= k || c >= n) { return 0.0; }
    if (TB) { return in1[c * k + r]; }
    return in1[r * n + c];
}

//#kernel matmul
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = p(0);
    let k = p(1);
    let n = p(2);
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

    for (var k0 = 0u; k0 < k; k0 += BK) {
        // Each invocation loads 4 elements of each tile; neighbours read neighbours.
        for (var e = 0u; e < 4u; e++) {
            let idx = tid + e * 256u;
            var r: u32;
            var kk: u32;
            if (TA) { kk = idx / TILE; r = idx % TILE; } else { r = idx / BK; kk = idx % BK; }
            a_tile[kk * TILE + r] = load_a(row0 + r, k0 + kk, m, k);
            var c: u32;
            if (TB) { c = idx / BK; kk = idx % BK; } else { kk = idx / TILE; c = idx % TILE; }
            b_tile[kk * TILE + c] = load_b(k0 + kk, col0 + c, k, n);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = a_tile[kk * TILE + lid.y + 16u * i];
                b[i] = b_tile[kk * TILE + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        if (r >= m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x + 16u * j;
            if (c < n) {
                out0[r * n + c] = act(acc[i * 4u + j] + bias_at(c));
            }
        }
    }
}
