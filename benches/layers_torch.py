"""The layer steps of benches/common/layers.rs in PyTorch, on the CPU.

Each case: ``loss = (layer(x) * g).sum()``, its gradients with respect to the
layer's parameters and its input, and an SGD step (lr 1e-6) — what wgnn's
``bench --only attention|conv2d`` times. Arguments name the cases as
``sdpa:B:HEADS:T:D:CAUSAL``, ``mha:B:HEADS:T:D``, ``conv2d:B:CIN:COUT:K:HW``.
Prints one JSON line per case: {"case": ARG, "ms": median ms per step, "runs": N,
"threads": T}.

`cargo run --release --example bench -- --only attention --torch` runs it beside
wgnn's CPU backend so the ratio comes from one run.
"""

import json
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F


def build(arg: str):
    kind, *nums = arg.split(":")
    n = [int(v) for v in nums]
    torch.manual_seed(0)
    if kind == "sdpa":
        b, heads, t, d, causal = n
        shape = (b, heads, t, d // heads)
        q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
        params, g = [q, k, v], torch.randn(shape)
        forward = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
    elif kind == "mha":
        b, heads, t, d = n
        mha = nn.MultiheadAttention(d, heads, batch_first=True)
        x = torch.randn(b, t, d, requires_grad=True)
        params, g = [x, *mha.parameters()], torch.randn(b, t, d)
        forward = lambda: mha(x, x, x, need_weights=False)[0]
    elif kind == "conv2d":
        b, cin, cout, k, hw = n
        conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        x = torch.randn(b, cin, hw, hw, requires_grad=True)
        params, g = [x, *conv.parameters()], torch.randn(b, cout, hw, hw)
        forward = lambda: conv(x)
    else:
        raise SystemExit(f"unknown case {arg}")
    opt = torch.optim.SGD(params, lr=1e-6)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        (forward() * g).sum().backward()
        opt.step()

    return step


def median_ms(step, seconds: float = 1.0) -> tuple[float, int]:
    for _ in range(2):
        step()
    samples, started = [], time.perf_counter()
    while len(samples) < 3 or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return samples[len(samples) // 2] * 1e3, len(samples)


def main() -> None:
    for arg in sys.argv[1:]:
        ms, runs = median_ms(build(arg))
        print(json.dumps({"case": arg, "ms": ms, "runs": runs, "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
