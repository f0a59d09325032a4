"""The README's CSV classifier in PyTorch, for comparison (run from the repository root)."""
import numpy as np
import torch
from torch import nn
from safetensors.torch import save_file

torch.manual_seed(0)
data = np.loadtxt("data/breast_cancer.csv", delimiter=",", skiprows=1, dtype=np.float32)
order = np.random.default_rng(0).permutation(len(data))
test, train = data[order[:114]], data[order[114:]]
x, y = torch.tensor(train[:, :-1]), torch.tensor(train[:, -1]).long()
n_val = round(0.2 * len(x))
x_val, y_val, x, y = x[-n_val:], y[-n_val:], x[:-n_val], y[:-n_val]


class Normalize(nn.Module):
    def __init__(self, x):
        super().__init__()
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0))

    def forward(self, x):
        return (x - self.mean) / self.std


net = nn.Sequential(Normalize(x), nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))
opt = torch.optim.Adam(net.parameters())
loss_fn = nn.CrossEntropyLoss()
for epoch in range(30):
    net.train()
    for idx in torch.randperm(len(x)).split(16):
        opt.zero_grad()
        loss = loss_fn(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        val_acc = (net(x_val).argmax(1) == y_val).float().mean().item()
    print(f"epoch {epoch + 1}: loss {loss.item():.4f}, val_accuracy {val_acc:.3f}")
x_test, y_test = torch.tensor(test[:, :-1]), torch.tensor(test[:, -1]).long()
with torch.no_grad():
    acc = (net(x_test).argmax(1) == y_test).float().mean().item()
print(f"test accuracy {acc:.3f}")
save_file(net.state_dict(), "/tmp/cancer.safetensors")
