// Fused scaled-dot-product attention (src/ops/attention.rs) over `slices` slices of
// [tq, d] queries, [tk, d] keys and [tk, dv] values: one invocation per query row
// (forward, query-row gradients) or key row (key and value gradients), 64 rows of
// one slice per workgroup, so every invocation of a workgroup reads the same keys.
// Each output is one invocation's sum in a fixed order: no atomics, the same bits on
// every run. A score below -1e38 (a -inf mask entry) is a hidden key.

const HEAD_MAX: u32 = 128u;
const HIDDEN: f32 = -1.0e38;

// Keys visible to query row i: all, or (CAUSAL, PyTorch's is_causal: aligned to the
// top left) those with j <= i.
fn visible(i: u32) -> u32 {
    if (!CAUSAL) { return params.tk; }
    return min(params.tk, i + 1u);
}

// The first query row that sees key j (tq when none does).
fn first_query(j: u32) -> u32 {
    if (!CAUSAL) { return 0u; }
    return min(j, params.tq);
}

// The scaled score of query row i and key row j of slice z, plus the mask.
fn score(z: u32, i: u32, j: u32) -> f32 {
    let d = params.d;
    let q0 = (z * params.tq + i) * d;
    let k0 = (z * params.tk + j) * d;
    var s = 0.0;
    for (var c = 0u; c < d; c++) {
        s = fma(in0[q0 + c], in1[k0 + c], s);
    }
    return s * params.scale + mask_at((z * params.tq + i) * params.tk + j);
}

// The slice and row of this invocation, or a row past the end.
fn slice_row(wid: vec3<u32>, lid: vec3<u32>, groups: vec3<u32>) -> vec2<u32> {
    let w = wid.x + wid.y * groups.x;
    return vec2<u32>(w / params.blocks, (w % params.blocks) * 64u + lid.x);
}

//#kernel attention_forward
// reads [q, k, v, mask?], writes [o, lse]: an online softmax over the keys.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let at = slice_row(wid, lid, groups);
    let z = at.x;
    let i = at.y;
    if (z >= params.slices || i >= params.tq) { return; }
    let dv = params.dv;
    var acc: array<f32, HEAD_MAX>;
    var m = -3.0e38;
    var l = 0.0;
    let n = visible(i);
    for (var j = 0u; j < n; j++) {
        let s = score(z, i, j);
        if (s < HIDDEN) { continue; }
        if (s > m) {
            let r = exp(m - s);
            l = l * r;
            for (var c = 0u; c < dv; c++) { acc[c] = acc[c] * r; }
            m = s;
        }
        let p = exp(s - m);
        l = l + p;
        let v0 = (z * params.tk + j) * dv;
        for (var c = 0u; c < dv; c++) { acc[c] = fma(p, in2[v0 + c], acc[c]); }
    }
    let row = z * params.tq + i;
    for (var c = 0u; c < dv; c++) { out0[row * dv + c] = acc[c] / l; }
    out1[row] = m + log(l);
}

//#kernel attention_query_rows
// reads [q, k, v, mask?, o, lse, dO], writes [dq, delta]: delta = dO . o, and
// dq = scale * sum_j P_ij (dO_i . v_j - delta) k_j.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let at = slice_row(wid, lid, groups);
    let z = at.x;
    let i = at.y;
    if (z >= params.slices || i >= params.tq) { return; }
    let d = params.d;
    let dv = params.dv;
    let row = z * params.tq + i;
    var delta = 0.0;
    for (var c = 0u; c < dv; c++) { delta = fma(dout_at(row * dv + c), o_at(row * dv + c), delta); }
    out1[row] = delta;
    let lse = lse_at(row);
    var acc: array<f32, HEAD_MAX>;
    let n = visible(i);
    for (var j = 0u; j < n; j++) {
        let s = score(z, i, j);
        if (s < HIDDEN) { continue; }
        let p = exp(s - lse);
        let v0 = (z * params.tk + j) * dv;
        var dp = 0.0;
        for (var c = 0u; c < dv; c++) { dp = fma(dout_at(row * dv + c), in2[v0 + c], dp); }
        let ds = p * (dp - delta) * params.scale;
        let k0 = (z * params.tk + j) * d;
        for (var c = 0u; c < d; c++) { acc[c] = fma(ds, in1[k0 + c], acc[c]); }
    }
    for (var c = 0u; c < d; c++) { out0[row * d + c] = acc[c]; }
}

//#kernel attention_key_rows
// reads [q, k, v, mask?, o, lse, dO, delta], writes [dk, dv]: over the query rows
// that see key j, dv = sum_i P_ij dO_i and dk = scale * sum_i dS_ij q_i.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let at = slice_row(wid, lid, groups);
    let z = at.x;
    let j = at.y;
    if (z >= params.slices || j >= params.tk) { return; }
    let d = params.d;
    let dv = params.dv;
    var dk: array<f32, HEAD_MAX>;
    var dvs: array<f32, HEAD_MAX>;
    let v0 = (z * params.tk + j) * dv;
    for (var i = first_query(j); i < params.tq; i++) {
        let s = score(z, i, j);
        if (s < HIDDEN) { continue; }
        let row = z * params.tq + i;
        let p = exp(s - lse_at(row));
        var dp = 0.0;
        for (var c = 0u; c < dv; c++) {
            let g = dout_at(row * dv + c);
            dvs[c] = fma(p, g, dvs[c]);
            dp = fma(g, in2[v0 + c], dp);
        }
        let ds = p * (dp - delta_at(row)) * params.scale;
        let q0 = row * d;
        for (var c = 0u; c < d; c++) { dk[c] = fma(ds, in0[q0 + c], dk[c]); }
    }
    let k0 = (z * params.tk + j) * d;
    for (var c = 0u; c < d; c++) { out0[k0 + c] = dk[c]; }
    for (var c = 0u; c < dv; c++) { out1[v0 + c] = dvs[c]; }
}
