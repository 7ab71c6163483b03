"""Wrap your own per-sample loss in NewtonLoss, and check its Newton step by hand.

    python examples/wrap_your_loss.py            # a few seconds on one CPU core

The loss is a non-convex "double well" around a target t, one value per sample:

    ℓ_i(y_i) = (‖r_i‖² − 1)²,   r_i = y_i − t_i
    ∇ℓ_i     = 4 (‖r_i‖² − 1) r_i
    ∇²ℓ_i    = 4 (‖r_i‖² − 1) I + 8 r_i r_iᵀ          (negative definite near the centre r = 0)

Its gradient and Hessian are known in closed form, so the direction NewtonLoss sends back to y
can be recomputed with nothing but torch.linalg:

1. curvature="hessian", the default projection "abs" (saddle-free Newton): with
   H_i = Q diag(μ) Qᵀ, d_i = Q diag(1 / (|μ| + λ)) Qᵀ g_i;
2. curvature="hessian", projection="tikhonov" (the paper's plain form): d_i = (H_i + λI)⁻¹ g_i
   where H_i + λI is positive definite, the "abs" form (the fallback) where it is not;
3. curvature="fisher": one matrix F = (1/N) Σ_j g_j g_jᵀ for the batch, d_i = (F + λI)⁻¹ g_i.

In each case backward() hands the outputs y the gradient d_i / N (the Newton direction of the
batch-mean loss). The script prints the largest difference between NewtonLoss and the hand
computation for each (float64: differences at rounding level), then trains a small network
through the wrapped loss.
"""
from __future__ import annotations

import torch

from newton_losses import NewtonLoss

torch.manual_seed(0)
DTYPE = torch.float64  # float64 so that the comparison shows the algebra, not rounding


# --- 1. Your loss: any function of the outputs y (N, m) and other arguments -> (N,) ---------------
def double_well(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample loss (‖y − t‖² − 1)²: y, target (N, m) -> (N,). Sample i may only use y[i]."""
    r2 = (y - target).pow(2).sum(-1)
    return (r2 - 1) ** 2


# --- 2. The same loss's gradient and Hessian, by hand --------------------------------------------
def gradient_and_hessian(y: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = y - target
    s = r.pow(2).sum(-1, keepdim=True) - 1                        # (N, 1): ‖r‖² − 1
    g = 4 * s * r                                                 # (N, m)
    eye = torch.eye(y.shape[1], dtype=y.dtype)
    H = 4 * s.unsqueeze(-1) * eye + 8 * r.unsqueeze(-1) * r.unsqueeze(-2)   # (N, m, m)
    return g, H


def abs_solve(H: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """Saddle-free Newton: (|H| + λI)⁻¹ g with |H| = Q diag(|μ|) Qᵀ."""
    mu, Q = torch.linalg.eigh(H)
    coeff = (Q.transpose(-1, -2) @ g.unsqueeze(-1)).squeeze(-1) / (mu.abs() + lam)
    return (Q @ coeff.unsqueeze(-1)).squeeze(-1)


def newton_gradient(newton: NewtonLoss, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """What NewtonLoss's backward sends to y, times N: the per-sample Newton directions."""
    y = y.detach().clone().requires_grad_(True)
    newton(y, target).backward()
    return y.grad * y.shape[0]


def main() -> None:
    N, m, lam = 64, 4, 0.5
    # Outputs at distances 0.1 .. 1.6 from their targets: inside the well (‖r‖ < 1/√3 makes H
    # negative definite), on its rim, and outside it.
    target = torch.randn(N, m, dtype=DTYPE)
    direction = torch.nn.functional.normalize(torch.randn(N, m, dtype=DTYPE), dim=1)
    y = target + torch.linspace(0.1, 1.6, N, dtype=DTYPE).unsqueeze(1) * direction

    g, H = gradient_and_hessian(y, target)
    eye = torch.eye(m, dtype=DTYPE)
    mu = torch.linalg.eigvalsh(H)
    print(f"double-well loss, N = {N} samples of m = {m} outputs, λ = {lam}")
    print(f"  Hessian blocks: {int((mu.min(-1).values < 0).sum())} of {N} indefinite or negative definite, "
          f"eigenvalues in [{float(mu.min()):.2f}, {float(mu.max()):.2f}]")

    # (a) per-sample Hessian, saddle-free (the default projection)
    hand = abs_solve(H, g, lam)
    ours = newton_gradient(NewtonLoss(double_well, curvature="hessian", lam=lam), y, target)
    diff_abs = float((ours - hand).abs().max())

    # (b) per-sample Hessian, the paper's plain H + λI; falls back to "abs" where H + λI is not PD
    newton = NewtonLoss(double_well, curvature="hessian", lam=lam, projection="tikhonov")
    ours = newton_gradient(newton, y, target)
    pd = torch.linalg.eigvalsh(H + lam * eye).min(-1).values > 0
    plain = torch.linalg.solve(H + lam * eye, g.unsqueeze(-1)).squeeze(-1)
    hand = torch.where(pd.unsqueeze(1), plain, abs_solve(H, g, lam))
    diff_tik = float((ours - hand).abs().max())
    n_fallback = newton.last_diagnostics.n_fallback

    # (c) empirical Fisher: one matrix for the whole batch
    F = g.T @ g / N
    hand = torch.linalg.solve(F + lam * eye, g.T).T
    ours = newton_gradient(NewtonLoss(double_well, curvature="fisher", lam=lam), y, target)
    diff_fisher = float((ours - hand).abs().max())

    print("  NewtonLoss against the hand-computed Newton step (max |difference| over all entries):")
    print(f"    hessian, projection='abs'      {diff_abs:.1e}")
    print(f"    hessian, projection='tikhonov' {diff_tik:.1e}   ({n_fallback} of {N} samples fell back to 'abs': "
          f"H + λI not positive definite)")
    print(f"    fisher                         {diff_fisher:.1e}")
    worst = max(diff_abs, diff_tik, diff_fisher)
    print(f"max difference {worst:.1e}")

    # --- 3. Training through the wrapped loss: a network's outputs y = net(x) -------------------
    # The network is trained by its usual optimizer; only the loss is differentiated twice.
    # A sample is solved (loss 0) once its output sits on the unit sphere around its target.
    x = torch.randn(512, 8, dtype=DTYPE)
    t = x @ torch.randn(8, m, dtype=DTYPE) / 3
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, m)).to(DTYPE)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    newton = NewtonLoss(double_well, curvature="hessian", lam=lam)
    with torch.no_grad():
        start = float(double_well(net(x), t).mean())
    descent = True
    for step in range(150):
        batch = torch.randint(0, 512, (64,))
        loss = newton(net(x[batch]), t[batch])      # value: double_well(...).mean(), for logging
        opt.zero_grad()
        loss.backward()                             # net receives the Newton direction
        opt.step()
        descent &= newton.last_diagnostics.min_descent_cosine > 0
    with torch.no_grad():
        end = float(double_well(net(x), t).mean())
    print(f"training a 2-layer MLP through NewtonLoss(hessian), Adam, 150 steps: mean loss {start:.3f} -> {end:.4f}; "
          f"every step a descent direction for every sample: {descent}")

if __name__ == "__main__":
    main()
