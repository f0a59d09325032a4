"""The CNN of examples/cnn.rs in PyTorch, on the CPU: its epoch time and test accuracy.

conv(1→16, 3×3, padding 1) · BatchNorm2d · ReLU · MaxPool2d(2), conv(16→32, 3×3,
padding 1) · BatchNorm2d · ReLU · MaxPool2d(2), Flatten, Linear(32·7·7 → 10); cross-
entropy, Adam (lr 2e-3 as the example's default, cosine-annealed per epoch to 1/100
of it), batch 64, shuffled every epoch, pixels / 255. Data: standard IDX files
(`--data DIR`, gzipped or not, read with numpy), or the committed MNIST subset (`data/mnist_5k.csv.gz`, shuffled by numpy with
the seed, then 4000 train / 1000 test — the example's sizes, not its rows).

Prints one line per epoch (seconds of the training pass alone, as the example's
"s per epoch", which is rows / fit's samples_per_sec) and the test accuracy after the
last, then one JSON line: {"epoch_s": [...], "median_epoch_s": ..., "test_accuracy":
..., "threads": T, "torch": version}.

    /work/venv/bin/python benches/cnn_torch.py --data /usr/share/datasets/fashion-mnist --epochs 1
"""

import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_idx(path: str) -> np.ndarray:
    """An IDX file (`.gz` tried first) as a uint8 array of its shape."""
    for p in (path + ".gz", path):
        if os.path.exists(p):
            raw = (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
            dims = raw[3]
            shape = np.frombuffer(raw, ">u4", dims, 4).astype(int)
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise FileNotFoundError(path)


def load(data: str | None, seed: int) -> tuple[torch.Tensor, ...]:
    if data:
        sets = []
        for split in ("train", "t10k"):
            x = read_idx(os.path.join(data, f"{split}-images-idx3-ubyte"))
            y = read_idx(os.path.join(data, f"{split}-labels-idx1-ubyte"))
            sets += [x, y]
        xs, ys, xt, yt = sets
    else:
        rows = np.loadtxt(os.path.join(ROOT, "data/mnist_5k.csv.gz"), delimiter=",", dtype=np.uint8)
        rows = rows[np.random.default_rng(seed).permutation(len(rows))]  # the file is sorted by label
        xs, ys, xt, yt = rows[:4000, :784], rows[:4000, 784], rows[4000:, :784], rows[4000:, 784]
    image = lambda x: torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    label = lambda y: torch.from_numpy(y.astype(np.int64))
    return image(xs), label(ys), image(xt), label(yt)


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="IDX folder (default: the committed MNIST subset)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, help="train on the first N rows only")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    x, y, xt, yt = load(args.data, args.seed)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs, eta_min=args.lr / 100)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        started = time.perf_counter()
        for i in range(0, len(x), args.batch):
            idx = order[i : i + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - started)
        cosine.step()
        print(f"epoch {epoch + 1}/{args.epochs} - {times[-1]:.2f}s - loss {loss.item():.4f} (last batch)", flush=True)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i : i + 1000]).argmax(1) for i in range(0, len(xt), 1000)])
    acc = (pred == yt).float().mean().item()
    print(f"test accuracy {acc:.4f}")
    result = {
        "rows": len(x),
        "epoch_s": [round(t, 3) for t in times],
        "median_epoch_s": round(float(np.median(times)), 3),
        "test_accuracy": round(acc, 4),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
