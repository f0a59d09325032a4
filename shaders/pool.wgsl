// Pooling over the last two axes: planes of [in_h, in_w] cut into [out_h, out_w]
// windows, each axis by fixed windows (k, s, p) or adaptive bins. Indices are u32
// bits in f32 words (h * in_w + w within a plane). Uniform fields are named in
// src/ops/pool.rs; the CPU twins there visit entries in the same order (same bits).

// Window o of an axis: [start, end) before clipping to the input.
fn window(o: u32, n_in: u32, n_out: u32, k: u32, s: u32, p: u32, adaptive: u32) -> vec2<i32> {
    if (adaptive != 0u) {
        return vec2<i32>(i32(o * n_in / n_out), i32(((o + 1u) * n_in + n_out - 1u) / n_out));
    }
    let start = i32(o * s) - i32(p);
    return vec2<i32>(start, start + i32(k));
}

// The windows [lo, hi) of an axis that contain entry i (empty when lo >= hi).
fn covering(i: u32, n_in: u32, n_out: u32, k: u32, s: u32, p: u32, adaptive: u32) -> vec2<u32> {
    if (adaptive != 0u) {
        return vec2<u32>(i * n_out / n_in, min(((i + 1u) * n_out + n_in - 1u) / n_in, n_out));
    }
    let at = i + p;
    var lo = 0u;
    if (at >= k) {
        lo = (at - k) / s + 1u;
    }
    return vec2<u32>(lo, min(at / s + 1u, n_out));
}

fn window_h(o: u32) -> vec2<i32> {
    return window(o, params.in_h, params.out_h, params.k_h, params.s_h, params.p_h, params.adaptive_h);
}

fn window_w(o: u32) -> vec2<i32> {
    return window(o, params.in_w, params.out_w, params.k_w, params.s_w, params.p_w, params.adaptive_w);
}

// The part of a window inside the input.
fn inside(win: vec2<i32>, n_in: u32) -> vec2<u32> {
    return vec2<u32>(u32(max(win.x, 0)), min(u32(max(win.y, 0)), n_in));
}

// Average pooling's divisor along an axis: the window up to the end of the padded
// axis (count_pad, PyTorch's count_include_pad), else its entries inside the input.
fn divisor_len(win: vec2<i32>, n_in: u32, p: u32, count_pad: u32) -> i32 {
    if (count_pad != 0u) {
        return min(win.y, i32(n_in + p)) - win.x;
    }
    return min(win.y, i32(n_in)) - max(win.x, 0);
}

// Average pooling's divisor of a window (src/ops/pool.rs's `area`).
fn area(oh: u32, ow: u32) -> f32 {
    let h = divisor_len(window_h(oh), params.in_h, params.p_h, params.count_pad_h);
    let w = divisor_len(window_w(ow), params.in_w, params.p_w, params.count_pad_w);
    return f32(h * w);
}

fn is_nan_f(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

//#kernel max_indices
// out0 [planes, out_h, out_w]: the index of each window's first maximum, row by row
// (a NaN wins over numbers; the first NaN over later ones).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let ow = i % params.out_w;
    let oh = (i / params.out_w) % params.out_h;
    let base = (i / (params.out_w * params.out_h)) * params.in_h * params.in_w;
    let rows = inside(window_h(oh), params.in_h);
    let cols = inside(window_w(ow), params.in_w);
    var best = f32_neg_inf();
    var at = rows.x * params.in_w + cols.x;
    for (var h = rows.x; h < rows.y; h++) {
        for (var w = cols.x; w < cols.y; w++) {
            let v = in0[base + h * params.in_w + w];
            if (v > best || (is_nan_f(v) && !is_nan_f(best))) {
                best = v;
                at = h * params.in_w + w;
            }
        }
    }
    out0[i] = bitcast<f32>(at);
}

//#kernel pick
// out0 [planes, out_h, out_w] = in0[plane, in1[i]]: max pooling's values.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let plane = i / (params.out_w * params.out_h);
    out0[i] = in0[plane * params.in_h * params.in_w + bitcast<u32>(in1[i])];
}

//#kernel average
// out0 [planes, out_h, out_w]: each window's sum over the input, row by row, over its
// whole area.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let ow = i % params.out_w;
    let oh = (i / params.out_w) % params.out_h;
    let base = (i / (params.out_w * params.out_h)) * params.in_h * params.in_w;
    let rows = inside(window_h(oh), params.in_h);
    let cols = inside(window_w(ow), params.in_w);
    var sum = 0.0;
    for (var h = rows.x; h < rows.y; h++) {
        for (var w = cols.x; w < cols.y; w++) {
            sum = sum + in0[base + h * params.in_w + w];
        }
    }
    out0[i] = sum / area(oh, ow);
}

//#kernel max_grad
// out0 [planes, in_h, in_w]: each entry sums, in window order, the gradients in0 of
// the windows whose index in1 is this entry.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let w = i % params.in_w;
    let h = (i / params.in_w) % params.in_h;
    let plane = i / (params.in_w * params.in_h);
    let me = h * params.in_w + w;
    let rows = covering(h, params.in_h, params.out_h, params.k_h, params.s_h, params.p_h, params.adaptive_h);
    let cols = covering(w, params.in_w, params.out_w, params.k_w, params.s_w, params.p_w, params.adaptive_w);
    var acc = 0.0;
    for (var oh = rows.x; oh < rows.y; oh++) {
        for (var ow = cols.x; ow < cols.y; ow++) {
            let o = (plane * params.out_h + oh) * params.out_w + ow;
            if (bitcast<u32>(in1[o]) == me) {
                acc = acc + in0[o];
            }
        }
    }
    out0[i] = acc;
}

//#kernel average_grad
// out0 [planes, in_h, in_w]: each entry sums, in window order, the gradients in0 of
// the windows that cover it, each over its window's area.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.n) { return; }
    let w = i % params.in_w;
    let h = (i / params.in_w) % params.in_h;
    let plane = i / (params.in_w * params.in_h);
    let rows = covering(h, params.in_h, params.out_h, params.k_h, params.s_h, params.p_h, params.adaptive_h);
    let cols = covering(w, params.in_w, params.out_w, params.k_w, params.s_w, params.p_w, params.adaptive_w);
    var acc = 0.0;
    for (var oh = rows.x; oh < rows.y; oh++) {
        for (var ow = cols.x; ow < cols.y; ow++) {
            let o = (plane * params.out_h + oh) * params.out_w + ow;
            acc = acc + in0[o] / area(oh, ow);
        }
    }
    out0[i] = acc;
}
