"""The README's LSTM regressor in PyTorch, for comparison."""
import math

import torch
from torch import nn
from safetensors.torch import save_file


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(1, 16, batch_first=True)
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


xs, ys = [], []
for r in range(128):
    t0 = r * 0.37
    xs.append([[math.sin(t0 + t * 0.3)] for t in range(12)])
    ys.append([math.sin(t0 + 12 * 0.3)])
x, y = torch.tensor(xs), torch.tensor(ys)
n_val = round(0.2 * len(x))
x_val, y_val, x, y = x[-n_val:], y[-n_val:], x[:-n_val], y[:-n_val]
net = Regressor()
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
for epoch in range(20):
    for idx in torch.randperm(len(x)).split(32):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
    with torch.no_grad():
        val_rmse = nn.functional.mse_loss(net(x_val), y_val).sqrt().item()
print(f"val_rmse {val_rmse:.4f}")
assert val_rmse < 0.1
save_file(net.state_dict(), "/tmp/regressor.safetensors")
