"""Small losses with known structure shared by the core tests."""
import torch


def quadratic(A, a):
    """ℓ_i(y) = ½ (y − a_i)ᵀ A_i (y − a_i); Hessian A_i, minimum a_i."""

    def loss(y):
        d = y - a
        return 0.5 * torch.einsum("ni,nij,nj->n", d, A, d)

    return loss


def spd(N, m, dtype=torch.float64, cond=10.0, gen=None):
    Q, _ = torch.linalg.qr(torch.randn(N, m, m, dtype=dtype, generator=gen))
    ev = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), m, dtype=dtype)
    return Q @ torch.diag_embed(ev.expand(N, m)) @ Q.transpose(1, 2)


def wavy(W, t):
    """A smooth nonlinear per-sample loss with indefinite Hessians:
    ℓ_i(y) = logsumexp(W y_i) − t_iᵀ y_i + 0.5 Σ_k cos(2 y_ik)."""

    def loss(y):
        y = y.reshape(y.shape[0], -1)
        return torch.logsumexp(y @ W.T, dim=-1) - (t * y).sum(-1) + 0.5 * torch.cos(2 * y).sum(-1)

    return loss
