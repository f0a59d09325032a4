"""PyTorch twin of `examples/lstm_text.rs`: a character-level LSTM on *Pride and Prejudice*.

It mirrors the Rust example step for step:

- data: `data/pride_and_prejudice.txt.gz` read as bytes; the vocabulary is the sorted
  set of distinct bytes (75); the first 90% (`len * 9 // 10`) is training, the rest
  validation;
- batching: each split is cut into `--batch` contiguous streams of `len // batch`
  characters; step `s` reads chunk `k = s % chunks` (`chunks = (len - 1) // seq`):
  inputs `seq` characters of every stream, targets the same shifted by one;
- truncated BPTT: the LSTM state is carried from step to step, detached, and reset to
  zeros whenever `k == 0` (a new pass over the training text);
- model: `nn.Embedding(vocab, 32)` -> one-layer `nn.LSTM(32, H, batch_first=True)` ->
  `nn.Linear(H, vocab)`, mean cross-entropy over the `batch x seq` characters;
- optimizer: `torch.optim.Adam(lr=--lr)` with PyTorch's other defaults (betas 0.9,
  0.999, eps 1e-8, no weight decay), gradients clipped to a global norm of 5
  (`clip_grad_norm_`), then `CosineAnnealingLR(T_max=steps, eta_min=lr/20)` stepped
  once after every optimizer step (so step 1 uses `lr`, the last step uses the rate at
  epoch `steps - 1`);
- reports: every `max(steps // 10, 1)` steps (and at the last step) the mean training
  loss since the previous report, in bits per character; validation only once, after
  training: every validation stream from a zero state, the state carried from chunk to
  chunk, `batch x chunks x seq` characters scored (67,584 with the defaults), bpc =
  summed cross-entropy / count / ln 2; the add-one unigram and bigram baselines on the
  same characters; then a sample of `--chars` characters from `--prompt`.

What cannot match: the initial weights (PyTorch's default init, the same distributions
as wgnn's -- uniform +-1/sqrt(H) for the LSTM and the head, N(0, 1) for the embedding
-- but drawn from `torch.manual_seed(seed)`, not wgnn's generator), the sampling RNG
(Python's `random.Random(seed)` in place of Rust's `StdRng`), and float rounding
(different kernels and summation orders). Timings are PyTorch's CPU eager mode with
`--threads` threads (default 1).

Run: `python3 benches/lstm_text_torch.py --steps 1000`
(flags: --steps 1000 --hidden 192 --seq 64 --batch 32 --lr 0.01 --seed 0
 --prompt "It is a truth" --temperature 0.8 --chars 300 --threads 1).
The last line is JSON: {"steps": N, "val_bpc": X, "train_bpc": Y, "seconds": S}, with
`train_bpc` the last training report and `seconds` the training time (as the Rust
example's "s of training"; validation time is printed separately).
"""

import argparse
import gzip
import json
import math
import random
import time
from pathlib import Path

import torch
from torch import nn

EMBED = 32
CLIP = 5.0
DATA = Path(__file__).resolve().parent.parent / "data" / "pride_and_prejudice.txt.gz"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt", default="It is a truth")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--chars", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if min(a.steps, a.hidden, a.seq, a.batch) <= 0:
        p.error("--steps, --hidden, --seq and --batch must be positive")
    return a


class Streams:
    """`batch` contiguous streams over `ids`, read `seq` characters at a time."""

    def __init__(self, ids: torch.Tensor, batch: int, seq: int):
        n = ids.numel()
        self.batch, self.seq = batch, seq
        self.len = n // batch
        self.chunks = max(self.len - 1, 0) // seq
        if self.chunks == 0:
            raise SystemExit(f"{n} characters do not fill {batch} streams of {seq} + 1 characters")
        self.rows = ids[: batch * self.len].view(batch, self.len)

    def chunk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of chunk `k`, `[batch, seq]`."""
        a = k * self.seq
        return self.rows[:, a : a + self.seq], self.rows[:, a + 1 : a + self.seq + 1]

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (previous, target) pair the chunks predict, for the baselines."""
        end = self.chunks * self.seq
        return self.rows[:, :end].reshape(-1), self.rows[:, 1 : end + 1].reshape(-1)


def baselines(train: torch.Tensor, vocab: int, prev: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Bits per character of the add-one unigram and bigram models of `train`."""
    train = train.long()
    uni = torch.bincount(train, minlength=vocab).double()
    bi = torch.bincount(train[:-1] * vocab + train[1:], minlength=vocab * vocab).double().view(vocab, vocab)
    frm = bi.sum(1)
    n, v = float(train.numel()), float(vocab)
    prev, target = prev.long(), target.long()
    bits_uni = -torch.log2((uni[target] + 1.0) / (n + v)).mean().item()
    bits_bi = -torch.log2((bi[prev, target] + 1.0) / (frm[prev] + v)).mean().item()
    return bits_uni, bits_bi


class Model(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, EMBED)
        self.lstm = nn.LSTM(EMBED, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor, state):
        """Logits `[b*t, vocab]` for `ids` (`[b, t]`) from `state`, and the final state."""
        out, last = self.lstm(self.emb(ids), state)
        return self.head(out.reshape(-1, out.shape[-1])), last


@torch.no_grad()
def evaluate(model: Model, streams: Streams, hidden: int) -> float:
    zeros = torch.zeros(1, streams.batch, hidden)
    state = (zeros, zeros.clone())
    nats = 0.0
    for k in range(streams.chunks):
        x, y = streams.chunk(k)
        logits, state = model(x, state)
        nats += float(nn.functional.cross_entropy(logits, y.reshape(-1), reduction="sum"))
    count = streams.batch * streams.chunks * streams.seq
    return nats / count / math.log(2)


def sample(logits: torch.Tensor, temperature: float, rng: random.Random) -> int:
    """Draws an index from softmax(logits / temperature), as the Rust example does."""
    t = max(temperature, 1e-3)
    lg = logits.double()
    weights = torch.exp((lg - lg.max()) / t).tolist()
    r = rng.random() * sum(weights)
    for i, w in enumerate(weights):
        r -= w
        if r <= 0.0:
            return i
    return len(weights) - 1


@torch.no_grad()
def generate(model: Model, prompt: list[int], n: int, temperature: float, rng: random.Random, hidden: int) -> list[int]:
    zeros = torch.zeros(1, 1, hidden)
    logits, state = model(torch.tensor([prompt]), (zeros, zeros.clone()))
    last, out = logits[-1], []
    for _ in range(n):
        nxt = sample(last, temperature, rng)
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]]), state)
        last = logits[-1]
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(f"device: PyTorch {torch.__version__} CPU eager, {torch.get_num_threads()} thread(s)")

    text = gzip.open(DATA, "rb").read()
    alphabet = sorted(set(text))
    vocab = len(alphabet)
    index = {ch: i for i, ch in enumerate(alphabet)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    split = ids.numel() * 9 // 10
    train, val = ids[:split], ids[split:]
    print(
        f"data: Pride and Prejudice, {ids.numel()} characters, {vocab} distinct; "
        f"train {train.numel()} (first 90%), validation {val.numel()} (last 10%)"
    )
    try:
        prompt = [index[ch] for ch in args.prompt.encode()]
    except KeyError:
        prompt = []
    if not prompt:
        raise SystemExit(f"--prompt {args.prompt!r}: must be non-empty and use only characters of the novel")

    train_streams = Streams(train, args.batch, args.seq)
    val_streams = Streams(val, args.batch, args.seq)
    uni, bi = baselines(train, vocab, *val_streams.pairs())

    torch.manual_seed(args.seed)
    model = Model(vocab, args.hidden)
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    print(f"model: {model.emb} → {model.lstm} → {model.head}, {n_params} parameters")
    print(
        f"training: {args.steps} steps of {args.batch} streams x {args.seq} characters "
        f"(one pass over the training text is {train_streams.chunks} steps), "
        f"Adam lr {args.lr} with cosine decay, gradients clipped to norm {CLIP:g}"
    )
    opt = torch.optim.Adam(params, lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20.0)

    b, hdim = args.batch, args.hidden

    def zero_state():
        return (torch.zeros(1, b, hdim), torch.zeros(1, b, hdim))

    state = zero_state()
    recent = torch.zeros(())
    report_every = max(args.steps // 10, 1)
    train_bpc = float("nan")
    started = time.perf_counter()
    for step in range(args.steps):
        k = step % train_streams.chunks
        if k == 0:
            state = zero_state()  # a new pass starts every stream afresh
        x, y = train_streams.chunk(k)
        logits, last = model(x, state)
        loss = nn.functional.cross_entropy(logits, y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        state = (last[0].detach(), last[1].detach())  # truncated BPTT
        recent = recent + loss.detach()
        schedule.step()
        if (step + 1) % report_every == 0 or step + 1 == args.steps:
            n = step % report_every + 1
            elapsed = time.perf_counter() - started
            train_bpc = recent.item() / n / math.log(2)
            print(
                f"step {step + 1:>5}  train {train_bpc:.3f} bpc  "
                f"{elapsed * 1e3 / (step + 1):.0f} ms/step  {elapsed:.0f} s",
                flush=True,
            )
            recent = torch.zeros(())
    train_secs = time.perf_counter() - started

    model.eval()
    t0 = time.perf_counter()
    bpc = evaluate(model, val_streams, hdim)
    eval_secs = time.perf_counter() - t0
    scored = val_streams.batch * val_streams.chunks * val_streams.seq
    print(f"\nvalidation bits per character ({scored} characters of the last 10%):")
    print(f"  unigram, add-one smoothing   {uni:.3f}")
    print(f"  bigram, add-one smoothing    {bi:.3f}")
    print(f"  LSTM                         {bpc:.3f}   ({train_secs:.0f} s of training, {eval_secs:.1f} s of validation)")

    if args.chars > 0:
        rng = random.Random(args.seed)
        sampled = generate(model, prompt, args.chars, args.temperature, rng, hdim)
        print(f"\nsample (temperature {args.temperature}):\n{args.prompt}" + "".join(chr(alphabet[i]) for i in sampled))

    print(json.dumps({"steps": args.steps, "val_bpc": bpc, "train_bpc": train_bpc, "seconds": train_secs}), flush=True)


if __name__ == "__main__":
    main()
