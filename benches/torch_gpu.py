"""The PyTorch half of benches/gpu.sh: the workloads of wgnn's GPU suite
(benches/common/gpu_suite.rs) in PyTorch on CUDA, f32 with TF32 off.

    python3 benches/torch_gpu.py [--out DIR] [--quick] [--allow-cpu]

Writes DIR/torch.json (rewritten after each section, so a run cut short keeps what
it measured) and prints each figure. Sections, as in the wgnn suite:

* first_step: the MLP step (784-128-10, ReLU, cross-entropy, Adam 1e-3) of a fresh
  model, first/second/third step, each synchronized (CUDA is initialised before).
* gemm: a[m,k] @ b[k,n] on random data: CUDA-event time per product with K products
  back to back (median of repeats), and the relative error of sampled rows
  against float64 on the host.
* mlp: the step in steady state, eager: synchronized each step (median), and K steps
  back to back then one synchronize, with the host time of the step calls.
* bandwidth: device-to-device copy (the reference: bytes read plus written), add,
  relu, relu(2a+b) and Adam (foreach and fused) on N floats, GB/s on ideal bytes.

Timing: warm-up first; CUDA events around back-to-back runs (host clock and no
events on the CPU, where --allow-cpu lets the script run without CUDA, e.g. to test
gpu.sh on a machine with no GPU: those figures are not a GPU's).
"""

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn

QUICK = {"gemm": [(64, 64, 64), (32, 784, 128)], "elements": 1 << 14, "time": 0.1}
FULL = {
    "gemm": [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (32, 784, 128), (128, 784, 128), (128, 32, 784)],
    "elements": 1 << 25,
    "time": 1.0,
}


class Suite:
    def __init__(self, device: torch.device, sizes: dict, out: str | None):
        self.device, self.sizes, self.out = device, sizes, out
        self.cuda = device.type == "cuda"
        self.results: dict = {}

    def add(self, name: str, value) -> None:
        self.results[name] = value
        if self.out:
            with open(os.path.join(self.out, "torch.json"), "w") as f:
                json.dump(self.results, f, indent=1)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def per_run(self, fn, k: int) -> float:
        """Seconds per run of `fn`, `k` runs back to back, one wait."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(k):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / k
        t = time.perf_counter()
        for _ in range(k):
            fn()
        return (time.perf_counter() - t) / k

    def pipelined(self, fn) -> tuple[float, int]:
        """Median seconds per run over repeats of K back-to-back runs (after warm-up)."""
        fn()
        self.sync()
        one = max(self.per_run(fn, 1), 1e-6)
        k = max(1, min(1000, int(self.sizes["time"] / 5 / one)))
        samples, started = [], time.perf_counter()
        while len(samples) < 3 or (time.perf_counter() - started < self.sizes["time"] and len(samples) < 20):
            samples.append(self.per_run(fn, k))
        return statistics.median(samples), k


def mlp_step(batch: int, device: torch.device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 784, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def first_step(s: Suite) -> list:
    rows = []
    print("first step (fresh model each; CUDA already initialised):")
    for batch in (32, 128):
        t = time.perf_counter()
        step = mlp_step(batch, s.device)
        s.sync()
        upload = (time.perf_counter() - t) * 1e3
        times = []
        for _ in range(3):
            t = time.perf_counter()
            step()
            s.sync()
            times.append((time.perf_counter() - t) * 1e3)
        print(f"  b{batch}: model+batch {upload:.1f} ms, steps {times[0]:.2f} / {times[1]:.2f} / {times[2]:.2f} ms")
        rows.append({"batch": batch, "upload_ms": upload, "first_ms": times[0], "second_ms": times[1], "third_ms": times[2]})
    return rows


def gemm(s: Suite) -> list:
    rows = []
    print("gemm (f32, TF32 off, random data):")
    print(f"  {'m x k x n':>16} {'ms':>11} {'GFLOP/s':>11} {'rel err':>10}")
    for m, k, n in s.sizes["gemm"]:
        a = torch.randn(m, k, device=s.device)
        b = torch.randn(k, n, device=s.device)
        c = torch.empty(m, n, device=s.device)
        torch.mm(a, b, out=c)
        picked = [0, m // 3, m // 2, m - 1]
        ref = a[picked].double().cpu() @ b.double().cpu()
        err = ((c[picked].double().cpu() - ref).norm() / ref.norm()).item()
        secs, reps = s.pipelined(lambda: torch.mm(a, b, out=c))
        flops = 2.0 * m * k * n
        print(f"  {f'{m}x{k}x{n}':>16} {secs * 1e3:>11.4f} {flops / secs * 1e-9:>11.1f} {err:>10.2e}")
        rows.append({"m": m, "k": k, "n": n, "ms": secs * 1e3, "gflops": flops / secs * 1e-9, "back_to_back": reps, "rel_err": err})
    return rows


def mlp(s: Suite) -> list:
    rows = []
    print("mlp step (784-128-10, Adam), eager, steady state:")
    for batch in (32, 128):
        step = mlp_step(batch, s.device)
        for _ in range(10):
            step()
        s.sync()
        waited, started = [], time.perf_counter()
        while len(waited) < 5 or (time.perf_counter() - started < s.sizes["time"] and len(waited) < 2000):
            t = time.perf_counter()
            step()
            s.sync()
            waited.append((time.perf_counter() - t) * 1e3)
        steps = 1000 if s.sizes["time"] >= 1.0 else 20
        t = time.perf_counter()
        for _ in range(steps):
            step()
        host = time.perf_counter() - t
        s.sync()
        total = time.perf_counter() - t
        row = {
            "batch": batch,
            "waited_ms": statistics.median(waited),
            "waited_runs": len(waited),
            "pipelined_ms": total / steps * 1e3,
            "pipelined_steps": steps,
            "host_us_per_step": host / steps * 1e6,
        }
        print(
            f"  b{batch}: synchronized {row['waited_ms']:.3f} ms (median of {len(waited)}), "
            f"back to back {row['pipelined_ms']:.3f} ms/step over {steps}; host {row['host_us_per_step']:.1f} µs/step"
        )
        rows.append(row)
    return rows


def bandwidth(s: Suite) -> list:
    n = s.sizes["elements"]
    word = 4.0 * n
    a, b = torch.randn(n, device=s.device), torch.randn(n, device=s.device)
    c = torch.empty(n, device=s.device)
    print(f"bandwidth ({n} floats, {word / 2**20:.0f} MiB per tensor):")
    rows = []

    def record(name: str, ideal_words: float, fn, elements: int = n) -> None:
        secs, _ = s.pipelined(fn)
        ideal = ideal_words * 4.0 * elements
        print(f"  {name:<28} {secs * 1e6:>9.1f} µs, {ideal / secs * 1e-9:>8.1f} GB/s on ideal bytes ({ideal_words} x n x 4)")
        rows.append({"name": name, "elements": elements, "us": secs * 1e6, "ideal_bytes": ideal, "ideal_gbs": ideal / secs * 1e-9})

    record("copy", 2.0, lambda: c.copy_(a))
    big = 4 * n if s.cuda else n
    src, dst = torch.randn(big, device=s.device), torch.empty(big, device=s.device)
    record("copy (4x larger)", 2.0, lambda: dst.copy_(src), big)
    del src, dst
    record("add (a + b)", 3.0, lambda: torch.add(a, b, out=c))
    record("relu(a)", 2.0, lambda: torch.relu(a))
    record("relu(2a + b) chain", 3.0, lambda: torch.relu(2.0 * a + b))
    for fused in (False, True):
        if fused and not s.cuda:
            continue
        p = torch.randn(n, device=s.device, requires_grad=True)
        p.grad = b.clone()
        opt = torch.optim.Adam([p], lr=1e-3, fused=fused, foreach=None if fused else True)
        record(f"adam {'fused' if fused else 'foreach'} (step only)", 7.0, opt.step)
        del p, opt
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--allow-cpu", action="store_true")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if torch.cuda.is_available():
        device = torch.device("cuda")
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
        name = torch.cuda.get_device_name()
    elif args.allow_cpu:
        device, name = torch.device("cpu"), f"CPU ({torch.get_num_threads()} threads; not a GPU figure)"
    else:
        raise SystemExit("torch_gpu.py: CUDA is not available (--allow-cpu to time the CPU instead)")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    s = Suite(device, QUICK if args.quick else FULL, args.out)
    print(f"torch {torch.__version__} on {name}; tf32 matmul {torch.backends.cuda.matmul.allow_tf32}")
    s.add("device", {"name": name, "torch": torch.__version__, "cuda": torch.version.cuda, "quick": args.quick})
    started = time.perf_counter()
    for section in (first_step, gemm, mlp, bandwidth):
        try:
            s.add(section.__name__, section(s))
        except Exception as e:  # one failed section must not lose the others
            print(f"  {section.__name__}: FAILED: {e!r}")
            s.add(section.__name__, {"error": repr(e)})
    print(f"torch suite took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
