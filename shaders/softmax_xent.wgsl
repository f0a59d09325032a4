// Fused log-softmax + cross-entropy, one invocation per row. in0: logits [rows,
// classes]; in1: labels (u32 bits). A label out of range gives NaN, never a fault.

fn row_max(base: u32, classes: u32) -> f32 {
    var m = f32_neg_inf();
    for (var c = 0u; c < classes; c++) { m = max(m, in0[base + c]); }
    return m;
}

fn row_sum_exp(base: u32, classes: u32, m: f32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < classes; c++) { s += exp(in0[base + c] - m); }
    return s;
}

// Row r's loss: log Σ exp(x - m) - (x[label] - m).
fn row_loss(r: u32) -> f32 {
    let classes = params.classes;
    let base = r * classes;
    let label = bitcast<u32>(in1[r]);
    let m = row_max(base, classes);
    let s = row_sum_exp(base, classes, m);
    if (label < classes) {
        return log(s) - (in0[base + label] - m);
    }
    return f32_nan();
}

//#kernel xent_rows
// out0[r] = log Σ exp(x) - x[label].
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = flat_id(gid, groups);
    if (r >= params.rows) { return; }
    out0[r] = row_loss(r);
}

//#kernel xent_mean
// out0[0] = the rows' losses summed (256 strided partial sums, then a tree, as a
// full sum()) times params.scale = 1 / rows. One workgroup.
var<workgroup> partial: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    for (var r = lid.x; r < params.rows; r += 256u) {
        acc = acc + row_loss(r);
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            partial[lid.x] = partial[lid.x] + partial[lid.x + s];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) { out0[0] = partial[0] * params.scale; }
}

//#kernel xent_mean_grad
// out0[r, c] = (softmax(x)[c] - onehot[c]) * (g * params.scale); in2: g (one word).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = flat_id(gid, groups);
    let classes = params.classes;
    if (r >= params.rows) { return; }
    let base = r * classes;
    let label = bitcast<u32>(in1[r]);
    let g = in2[0] * params.scale;
    let m = row_max(base, classes);
    let s = row_sum_exp(base, classes, m);
    for (var c = 0u; c < classes; c++) {
        let prob = exp(in0[base + c] - m) / s;
        out0[base + c] = (prob - select(0.0, 1.0, c == label)) * g;
    }
}

//#kernel xent_rows_grad
// out0[r, c] = (softmax(x)[c] - onehot[c]) * g[r]; in2: g.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = flat_id(gid, groups);
    let classes = params.classes;
    if (r >= params.rows) { return; }
    let base = r * classes;
    let label = bitcast<u32>(in1[r]);
    let g = in2[r];
    let m = row_max(base, classes);
    let s = row_sum_exp(base, classes, m);
    for (var c = 0u; c < classes; c++) {
        let prob = exp(in0[base + c] - m) / s;
        out0[base + c] = (prob - select(0.0, 1.0, c == label)) * g;
    }
}
