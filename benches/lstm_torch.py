"""The LSTM training step of benches/common/lstm_step.rs in PyTorch, on the CPU.

Input 64, hidden H (128 and 512), batch 32, sequence 50, batch_first, a Linear head
on the last output, MSE, Adam lr 1e-3. Prints one JSON line per hidden size:
{"hidden": H, "ms": median milliseconds per step, "runs": N, "threads": T}.

`cargo run --release --example bench -- --torch` runs it beside wgnn's CPU backend
so the ratio comes from one run; alone: `python3 benches/lstm_torch.py [H ...]`.
"""

import json
import sys
import time

import torch
from torch import nn


def median_step_ms(hidden: int, seconds: float = 1.0) -> tuple[float, int]:
    torch.manual_seed(0)
    lstm = nn.LSTM(64, hidden, batch_first=True)
    head = nn.Linear(hidden, 1)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-3)
    x, y = torch.randn(32, 50, 64), torch.randn(32, 1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out, _ = lstm(x)
        loss = nn.functional.mse_loss(head(out[:, -1]), y)
        loss.backward()
        opt.step()

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
    sizes = [int(a) for a in sys.argv[1:]] or [128, 512]
    for hidden in sizes:
        ms, runs = median_step_ms(hidden)
        print(json.dumps({"hidden": hidden, "ms": ms, "runs": runs, "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
