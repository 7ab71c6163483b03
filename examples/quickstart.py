import torch
from newton_losses import NewtonLoss, NeuralSort, RankingLoss

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
newton = NewtonLoss(RankingLoss(NeuralSort(tau=1.0)), curvature="fisher", lam=0.1, damping="batch")
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for step in range(300):
    x = torch.randn(100, 5, 16)                   # 100 sets of 5 items, 16 features each
    loss = newton(net(x).squeeze(-1), x[..., 0])  # scores (100, 5); learn to rank by feature 0
    opt.zero_grad(); loss.backward(); opt.step()  # the net receives the Newton direction
x = torch.randn(1000, 5, 16)
print(f"sets ranked exactly: {(net(x).squeeze(-1).argsort(-1) == x[..., 0].argsort(-1)).all(-1).float().mean():.0%}")
