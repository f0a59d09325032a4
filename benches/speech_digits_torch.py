"""The Conv1d + GRU of examples/speech_digits.rs in PyTorch, on the CPU: its held-out-voice
accuracy and time, on the same committed features and the same split.

Reads data/speech_digits/features.safetensors.gz, holds out the variants m3, f2, klatt3
in every accent and the accent en-gb-scotland in every variant (the example's
defaults), standardizes each mel channel with the training clips' statistics, and
trains Conv1d(32→64, 5, padding 2) · BatchNorm1d · ReLU · MaxPool1d(2) · Conv1d(64→64,
3, padding 1) · BatchNorm1d · ReLU → GRU(64, batch_first) → Linear(64→10) on the last
state; cross-entropy, Adam (lr 3e-3, cosine-annealed per epoch to 1/100 of it),
batch 32, shuffled every epoch, 12 epochs. The initialization and the shuffling are
PyTorch's own (seeded), so the figure is comparable to the example's, not equal.

Prints one line per epoch and then one JSON line: {"held_out_accuracy": ...,
"train_s": ..., "threads": T, "torch": version}.

    /work/venv/bin/python benches/speech_digits_torch.py [--seed 0] [--threads 2]
"""

import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
from safetensors.numpy import load
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = os.path.join(ROOT, "data", "speech_digits", "features.safetensors.gz")


class SpeechNet(nn.Module):
    def __init__(self, mels, hidden):
        super().__init__()
        self.front = nn.Sequential(
            nn.Conv1d(mels, hidden, 5, padding=2),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(hidden, hidden, 3, padding=1),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
        )
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        _, h = self.gru(self.front(x).transpose(1, 2))
        return self.head(h[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with gzip.open(FEATURES) as f:
        raw = f.read()
    d = load(raw)
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    accents, variants = header["accents"].split(","), header["variants"].split(",")
    db = float(header["db_lo"]) + float(header["db_step"]) * d["log_mel"].astype(np.float32)  # [n, T, M]
    held = np.array(
        [variants[v] in ("m3", "f2", "klatt3") or accents[a] == "en-gb-scotland" for a, v in zip(d["accent"], d["variant"])]
    )
    train, test = ~held, held
    mean, std = db[train].mean(axis=(0, 1)), db[train].std(axis=(0, 1))
    x = torch.tensor(((db - mean) / std).transpose(0, 2, 1).copy())  # [n, M, T]
    y = torch.tensor(d["digit"].astype(np.int64))
    xt, yt, xe, ye = x[train], y[train], x[test], y[test]
    net = SpeechNet(x.shape[1], 64)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs, eta_min=3e-5)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(xt))
        for i in range(0, len(order), 32):
            b = order[i : i + 32]
            loss = nn.functional.cross_entropy(net(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(xe).argmax(1) == ye).float().mean().item()
        print(f"epoch {epoch + 1}/{args.epochs} - loss {loss.item():.4f} - held-out accuracy {acc:.4f}")
    train_s = time.perf_counter() - started
    print(json.dumps({"held_out_accuracy": acc, "train_s": round(train_s, 2), "threads": args.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
