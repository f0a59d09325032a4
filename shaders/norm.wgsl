// Layer, group and batch normalization (src/ops/norm.rs): x viewed as [N, C, S].
// MODE 0: statistics per sample and group of channels (rows of len values), 1: per
// channel over N·S values, 2: per channel from running statistics. Sums are one
// workgroup's: strided partial sums in a fixed order, then a tree.

var<workgroup> partial: array<f32, 256>;

// The sum of every invocation's `v`, in a fixed order; each invocation gets it.
// Called in uniform control flow.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Value j of reduction group w: its index in x and its channel (x as [N, c, s];
// rows of len values in MODE 0).
fn element(w: u32, j: u32, c: u32, s: u32, groups: u32, len: u32) -> vec2<u32> {
    if (MODE == 0u) {
        return vec2<u32>(w * len + j, (w % groups) * (c / groups) + j / s);
    }
    return vec2<u32>(((j / s) * c + w) * s + j % s, w);
}

// Where the statistics of the value at sample n, channel c are (of c channels).
fn stat_index(n: u32, c: u32, channels: u32, groups: u32) -> u32 {
    if (MODE == 0u) {
        return n * groups + c / (channels / groups);
    }
    return c;
}

// The mean and rstd from the backward's statistics inputs: mean and rstd, or (MODE
// 2) running mean and running variance.
fn to_stats(a: f32, b: f32, eps: f32) -> vec2<f32> {
    if (MODE == 2u) {
        return vec2<f32>(a, 1.0 / sqrt(b + eps));
    }
    return vec2<f32>(a, b);
}

//#kernel norm_forward
// reads [x, weight, bias], writes [y, mean, rstd, unbiased var]; one workgroup per
// reduction group.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let w = wid.x + wid.y * groups.x;
    let len = params.len;
    let live = w < params.count;
    var acc = 0.0;
    if (live) {
        for (var j = lid.x; j < len; j += 256u) {
            acc = acc + in0[element(w, j, params.channels, params.spatial, params.groups, len).x];
        }
    }
    let mean = workgroup_sum(lid.x, acc) / f32(len);
    acc = 0.0;
    if (live) {
        for (var j = lid.x; j < len; j += 256u) {
            let d = in0[element(w, j, params.channels, params.spatial, params.groups, len).x] - mean;
            acc = acc + d * d;
        }
    }
    let sq = workgroup_sum(lid.x, acc);
    let rstd = 1.0 / sqrt(sq / f32(len) + params.eps);
    if (live) {
        for (var j = lid.x; j < len; j += 256u) {
            let e = element(w, j, params.channels, params.spatial, params.groups, len);
            out0[e.x] = (in0[e.x] - mean) * rstd * in1[e.y] + in2[e.y];
        }
        if (lid.x == 0u) {
            out1[w] = mean;
            out2[w] = rstd;
            out3[w] = sq / (f32(len) - 1.0);
        }
    }
}

//#kernel norm_eval
// reads [x, running_mean, running_var, weight, bias], writes [y]; one invocation per
// value.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.numel) { return; }
    let c = (i / params.spatial) % params.channels;
    let rstd = 1.0 / sqrt(in2[c] + params.eps);
    out0[i] = (in0[i] - in1[c]) * rstd * in3[c] + in4[c];
}

//#kernel norm_rows_dx
// reads [x, weight, mean, rstd, dy], writes [dx]; one workgroup per group of group
// norm: dx = rstd (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)), ĝ = dy · weight.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let w = wid.x + wid.y * groups.x;
    let len = params.len;
    let live = w < params.count;
    var m = 0.0;
    var r = 0.0;
    if (live) {
        m = in2[w];
        r = in3[w];
    }
    var acc = 0.0;
    if (live) {
        for (var j = lid.x; j < len; j += 256u) {
            let e = element(w, j, params.channels, params.spatial, params.groups, len);
            acc = acc + in4[e.x] * in1[e.y];
        }
    }
    let s1 = workgroup_sum(lid.x, acc) / f32(len);
    acc = 0.0;
    if (live) {
        for (var j = lid.x; j < len; j += 256u) {
            let e = element(w, j, params.channels, params.spatial, params.groups, len);
            acc = acc + in4[e.x] * in1[e.y] * ((in0[e.x] - m) * r);
        }
    }
    let s2 = workgroup_sum(lid.x, acc) / f32(len);
    if (live) {
        for (var j = lid.x; j < len; j += 256u) {
            let e = element(w, j, params.channels, params.spatial, params.groups, len);
            let xhat = (in0[e.x] - m) * r;
            out0[e.x] = r * (in4[e.x] * in1[e.y] - s1 - xhat * s2);
        }
    }
}

//#kernel norm_channel_sums
// reads [x, weight, stat a, stat b, dy], writes [dweight, dbias]; one workgroup per
// channel, over its N·S values.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = wid.x + wid.y * groups.x;
    let s = params.spatial;
    let len = params.batch * s;
    let live = c < params.channels;
    var dw = 0.0;
    var db = 0.0;
    if (live) {
        for (var j = lid.x; j < len; j += 256u) {
            let i = ((j / s) * params.channels + c) * s + j % s;
            let k = stat_index(j / s, c, params.channels, params.groups);
            let st = to_stats(in2[k], in3[k], params.eps);
            dw = dw + in4[i] * ((in0[i] - st.x) * st.y);
            db = db + in4[i];
        }
    }
    let sum_dw = workgroup_sum(lid.x, dw);
    let sum_db = workgroup_sum(lid.x, db);
    if (live && lid.x == 0u) {
        out0[c] = sum_dw;
        out1[c] = sum_db;
    }
}

//#kernel norm_channel_dx
// reads [x, weight, stat a, stat b, dy, dweight, dbias], writes [dx]; one invocation
// per value (batch norm).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.numel) { return; }
    let c = (i / params.spatial) % params.channels;
    let st = to_stats(in2[c], in3[c], params.eps);
    if (MODE == 2u) {
        out0[i] = in4[i] * in1[c] * st.y;
        return;
    }
    let m = f32(params.batch * params.spatial);
    let xhat = (in0[i] - st.x) * st.y;
    out0[i] = in1[c] * st.y * (in4[i] - in6[c] / m - xhat * in5[c] / m);
}

//#kernel running_stats_cumulative
// As running_stats with PyTorch's momentum=None: momentum = 1 / (count + 1), one
// workgroup looping over the channels, which all read the count before invocation 0
// increments it (after the barrier).
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let m = 1.0 / (f32(bitcast<u32>(out2[0])) + 1.0);
    let keep = 1.0 - m;
    for (var i = lid.x; i < params.channels; i += 256u) {
        out0[i] = m * in0[i] + keep * out0[i];
        out1[i] = m * in1[i] + keep * out1[i];
    }
    storageBarrier();
    if (lid.x == 0u) {
        out2[0] = bitcast<f32>(bitcast<u32>(out2[0]) + 1u);
    }
}

//#kernel running_stats
// reads [batch mean, batch var], writes [running_mean, running_var, count] in place:
// running = momentum · batch + (1 − momentum) · running; count + 1 (u32 bits).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(gid, groups);
    if (i >= params.channels) { return; }
    out0[i] = params.momentum * in0[i] + params.keep * out0[i];
    out1[i] = params.momentum * in1[i] + params.keep * out1[i];
    if (i == 0u) {
        out2[0] = bitcast<f32>(bitcast<u32>(out2[0]) + 1u);
    }
}
