"""The ratio table of benches/gpu.sh: reads DIR/wgnn.json (bench --gpu-suite) and
DIR/torch.json (benches/torch_gpu.py), prints a markdown summary against issue 10's
GPU targets and writes it to DIR/summary.md.

    python3 benches/gpu_report.py DIR

f32 peak used for "fraction of peak": NVIDIA's H100 datasheet gives 67 TFLOP/s FP32
(non-tensor) for the SXM5 board (H100 80GB HBM3, also the H200's GH100), 51 for PCIe;
WGNN_GPU_PEAK_TFLOPS overrides, and an unknown name gets no fraction.
"""

import json
import os
import sys


def load(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"{path}: {e}"}


def peak_tflops(name: str) -> tuple[float | None, str]:
    if os.environ.get("WGNN_GPU_PEAK_TFLOPS"):
        return float(os.environ["WGNN_GPU_PEAK_TFLOPS"]), "WGNN_GPU_PEAK_TFLOPS"
    if "H100" in name and "PCIe" in name:
        return 51.2, "NVIDIA H100 datasheet, PCIe FP32"
    if "H100" in name or "H200" in name:
        return 66.9, "NVIDIA H100 datasheet, SXM5 FP32 (non-tensor)"
    return None, "unknown adapter: no peak"


def rows(d: dict, key: str) -> list:
    v = d.get(key)
    return v if isinstance(v, list) else []


def fmt(x, spec=".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    w, t = load(os.path.join(out, "wgnn.json")), load(os.path.join(out, "torch.json"))
    adapter = w.get("adapter", {})
    name = adapter.get("name", "?")
    peak, peak_src = peak_tflops(name + " " + t.get("device", {}).get("name", ""))
    lines = ["# wgnn vs PyTorch on this GPU (benches/gpu.sh)", ""]
    lines.append(f"- wgnn adapter: {name} ({adapter.get('backend')}, {adapter.get('device_type')}, driver {adapter.get('driver')})")
    dev = t.get("device", {})
    lines.append(f"- PyTorch: {dev.get('torch')} CUDA {dev.get('cuda')} on {dev.get('name')}, TF32 off")
    lines.append(f"- f32 peak used: {fmt(peak, '.1f')} TFLOP/s ({peak_src})")
    if adapter.get("quick") == "true" or dev.get("quick"):
        lines.append("- **--quick run: tiny sizes, figures mean nothing**")
    for d, who in ((w, "wgnn"), (t, "torch")):
        for k, v in d.items():
            if isinstance(v, dict) and "error" in v:
                lines.append(f"- {who} section {k} FAILED: {v['error']}")
        if "error" in d:
            lines.append(f"- {who}: {d['error']}")
    targets = []

    lines += ["", "## GEMM (f32, TF32 off)", ""]
    lines.append("| m×k×n | wgnn kernel GFLOP/s | wgnn wall GFLOP/s | cuBLAS GFLOP/s | wgnn/cuBLAS (kernel, wall) | wgnn % peak | cuBLAS % peak | rel err wgnn / torch |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    tg = {(r["m"], r["k"], r["n"]): r for r in rows(t, "gemm")}
    for r in rows(w, "gemm"):
        shape = (r["m"], r["k"], r["n"])
        c = tg.get(shape, {})
        cg = c.get("gflops")
        pct = lambda g: None if peak is None or g is None else 100 * g / (peak * 1e3)
        rk, rw = ratio(r.get("kernel_gflops"), cg), ratio(r.get("wall_gflops"), cg)
        lines.append(
            f"| {'×'.join(map(str, shape))} | {fmt(r.get('kernel_gflops'), '.0f')} | {fmt(r.get('wall_gflops'), '.0f')} | {fmt(cg, '.0f')} "
            f"| {fmt(rk)}, {fmt(rw)} | {fmt(pct(r.get('kernel_gflops')), '.1f')} | {fmt(pct(cg), '.1f')} "
            f"| {fmt(r.get('rel_err'), '.1e')} / {fmt(c.get('rel_err'), '.1e')} |"
        )
        if shape == (4096, 4096, 4096):
            targets.append(("GEMM 4096³ ≥ 0.5× cuBLAS f32 (wall)", rw, rw is not None and rw >= 0.5))

    tiles = rows(w, "gemm_tiles")
    if tiles:
        names = [c["tile"] for c in tiles[0]["tiles"]]
        chosen = {
            (r["m"], r["k"], r["n"]): ", ".join(sorted({l.get("variant", "?") for l in r.get("plan", {}).get("launches", []) if l["kernel"].startswith("matmul")}))
            for r in rows(w, "gemm")
        }
        lines += ["", "## GEMM tiles, each forced (wgnn kernel GFLOP/s; the autotune's choice from the GEMM table)", ""]
        lines.append("| m×k×n | " + " | ".join(names) + " | autotune chose |")
        lines.append("| --- | " + " | ".join("---:" for _ in names) + " | --- |")
        for r in tiles:
            shape = (r["m"], r["k"], r["n"])
            cells = " | ".join(fmt(c.get("kernel_gflops"), ".0f") for c in r["tiles"])
            lines.append(f"| {'×'.join(map(str, shape))} | {cells} | {chosen.get(shape, 'n/a')} |")

    lines += ["", "## MLP training step (784-128-10, Adam), ms per step", ""]
    lines.append("| batch | wgnn waited | torch synchronized | ratio | wgnn back to back | torch back to back | ratio | wgnn first step | torch first step |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    tm = {r["batch"]: r for r in rows(t, "mlp")}
    wf = {r["batch"]: r for r in rows(w, "first_step")}
    tf = {r["batch"]: r for r in rows(t, "first_step")}
    for r in rows(w, "mlp"):
        b = r["batch"]
        c = tm.get(b, {})
        r1, r2 = ratio(r.get("waited_ms"), c.get("waited_ms")), ratio(r.get("pipelined_ms"), c.get("pipelined_ms"))
        lines.append(
            f"| {b} | {fmt(r.get('waited_ms'), '.3f')} | {fmt(c.get('waited_ms'), '.3f')} | {fmt(r1)} | {fmt(r.get('pipelined_ms'), '.3f')} "
            f"| {fmt(c.get('pipelined_ms'), '.3f')} | {fmt(r2)} | {fmt(wf.get(b, {}).get('first_ms'), '.1f')} | {fmt(tf.get(b, {}).get('first_ms'), '.1f')} |"
        )
        targets.append((f"MLP step b{b} faster than PyTorch eager (back to back, wgnn/torch)", r2, r2 is not None and r2 < 1))
        targets.append((f"MLP step b{b} faster than PyTorch eager (waited each step, wgnn/torch)", r1, r1 is not None and r1 < 1))

    lines += ["", "## Host time in plan replay (wgnn MLP step, submitted back to back)", ""]
    lines.append("| batch | host µs/step | dispatches/step | submits/step | host µs/dispatch | torch host µs/step |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows(w, "mlp"):
        b = r["batch"]
        lines.append(
            f"| {b} | {fmt(r.get('host_us_per_step'), '.1f')} | {fmt(r.get('dispatches_per_step'), '.1f')} | {fmt(r.get('submits_per_step'), '.1f')} "
            f"| {fmt(r.get('host_us_per_dispatch'))} | {fmt(tm.get(b, {}).get('host_us_per_step'), '.1f')} |"
        )
        u = r.get("host_us_per_dispatch")
        targets.append((f"host µs per dispatch b{b} ≤ 2", u, u is not None and u <= 2))

    copies = [r["ideal_gbs"] for r in rows(t, "bandwidth") if r["name"].startswith("copy")]
    copy = max(copies) if copies else None
    lines += ["", f"## Bandwidth (GB/s on ideal bytes; device-to-device copy, PyTorch: {fmt(copy, '.0f')} GB/s)", ""]
    lines.append("| workload | wgnn GB/s | wgnn / copy | torch GB/s | torch / copy |")
    lines.append("| --- | ---: | ---: | ---: | ---: |")
    tb = {r["name"]: r for r in rows(t, "bandwidth")}
    for r in rows(w, "bandwidth"):
        g = r.get("ideal_gbs")
        c = tb.get(r["name"], {}).get("ideal_gbs")
        lines.append(f"| wgnn {r['name']} | {fmt(g, '.0f')} | {fmt(ratio(g, copy))} | {fmt(c, '.0f')} | {fmt(ratio(c, copy))} |")
        if r["name"] in ("add (a + b)", "relu(a)", "adam kernel"):
            f = ratio(g, copy)
            targets.append((f"{r['name']} ≥ 70% of copy bandwidth", f, f is not None and f >= 0.7))
    for r in rows(t, "bandwidth"):
        if not any(r["name"] == x["name"] for x in rows(w, "bandwidth")):
            lines.append(f"| torch {r['name']} | | | {fmt(r['ideal_gbs'], '.0f')} | {fmt(ratio(r['ideal_gbs'], copy))} |")

    lines += ["", "## Issue 10 GPU targets", ""]
    for what, value, ok in targets:
        lines.append(f"- {'MET ' if ok else 'MISS'} {what}: {fmt(value)}")
    for p in rows(w, "profile"):
        lines += ["", f"## WGNN_PROFILE, one MLP step, batch {p['batch']}", "", "```text", p["table"].rstrip(), "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
