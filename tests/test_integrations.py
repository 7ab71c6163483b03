"""The integrations of docs/INTEGRATION.md, checked: mixed precision (autocast, GradScaler) and
Lightning. (torch.compile: tests/test_compile.py; DDP: tests/test_distributed.py and
tests/test_experiments_distributed.py.)"""
from __future__ import annotations

import warnings

import pytest
import torch

from newton_losses import NewtonLoss, NonFiniteLossError
from newton_losses.sorting import NeuralSort, RankingLoss, permutation_matrix


def _quartic(y, t):
    return ((y - t) ** 4).sum(-1) + (y[:, 0] * y[:, 1]) ** 2


def _setup():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3), torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)


def _grad(net, fn):
    net.zero_grad()
    fn().backward()
    return net.weight.grad.clone()


@pytest.mark.parametrize("dtype, rtol", [(torch.bfloat16, 2e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("loss_in_float32", [True, False])
def test_autocast_outputs_get_the_float32_newton_gradient(dtype, rtol, loss_in_float32):
    """Low-precision outputs: the curvature is solved in float64 and the direction cast back, so
    the gradient is the float32 one up to the outputs' own rounding."""
    net, x, t = _setup()
    newton = NewtonLoss(_quartic, curvature="hessian", lam=0.1)
    ref = _grad(net, lambda: newton(net(x), t))

    def amp():
        with torch.autocast("cpu", dtype=dtype):
            y = net(x)
            assert y.dtype == dtype
            return newton(y.float() if loss_in_float32 else y, t)

    got = _grad(net, amp)  # (the loss comes out float32 here: t is float32, so no half-precision warning)
    assert (got - ref).abs().max() <= rtol * ref.abs().max()


def test_a_half_precision_loss_warns_and_the_float32_loss_is_accurate():
    """The measurement quoted in docs/INTEGRATION.md: a saturated softplus loss."""
    from newton_losses import newton_direction

    torch.manual_seed(0)
    y, t = torch.randn(16, 4) * 2, torch.randn(16, 4)
    per = lambda y, t: torch.nn.functional.softplus(5 * (t - y)).sum(-1)  # noqa: E731
    ref = newton_direction(per, y.double(), t.double(), curvature="hessian", lam=0.1)
    for dtype in (torch.bfloat16, torch.float16):
        with pytest.warns(RuntimeWarning, match=f"computed the loss in {dtype}"):
            half = newton_direction(per, y.to(dtype), t.to(dtype), curvature="hessian", lam=0.1)
        in32 = newton_direction(per, y.to(dtype).float(), t, curvature="hessian", lam=0.1)
        err = lambda d: float((d.double() - ref).abs().max() / ref.abs().max())  # noqa: E731
        assert err(in32) < 0.01 < err(half)


def test_grad_scaler_scales_and_unscales_the_newton_gradient():
    net, x, t = _setup()
    newton = NewtonLoss(_quartic, curvature="fisher", lam=0.1)
    ref = _grad(net, lambda: newton(net(x), t))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    net.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        y = net(x)
    scaler.scale(newton(y.float(), t)).backward()
    assert net.weight.grad.abs().max() > 100 * ref.abs().max()  # scaled by 1024 on the way back
    scaler.unscale_(opt)
    torch.testing.assert_close(net.weight.grad, ref, rtol=5e-3, atol=1e-4)


def test_float16_ranking_loss_is_refused_and_float32_loss_on_float16_outputs_works():
    scores = torch.randn(6, 4).half().requires_grad_()
    P = permutation_matrix(torch.randn(6, 4))
    newton = NewtonLoss(RankingLoss(NeuralSort()), curvature="fisher", lam=0.1)
    with pytest.raises((ValueError, TypeError), match="float16"):
        newton(scores, P.half())
    newton(scores.float(), P).backward()  # the recipe: compute the loss in float32
    assert scores.grad.dtype == torch.float16 and torch.isfinite(scores.grad).all()


def test_float16_overflow_names_the_cure():
    y = torch.full((2, 3), 30.0, dtype=torch.float16, requires_grad=True)
    with pytest.raises(NonFiniteLossError, match="bfloat16"):
        NewtonLoss(lambda y: (y ** 4).sum(-1), curvature="fisher")(y)


def test_lightning_training_step_trains_like_a_plain_loop():
    L = pytest.importorskip("lightning")

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Linear(4, 3)
            self.newton = NewtonLoss(_quartic, curvature="hessian", lam=0.1)

        def training_step(self, batch, batch_idx):
            x, t = batch
            loss = self.newton(self.net(x), t)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 3, generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    module = Lit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and loggers
        L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False).fit(module, loader)
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    newton = NewtonLoss(_quartic, curvature="hessian", lam=0.1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        for x, t in loader:
            opt.zero_grad()
            newton(net(x), t).backward()
            opt.step()
    torch.testing.assert_close(module.net.weight, net.weight, rtol=0, atol=0)
    assert module.newton.totals.calls == newton.totals.calls == 8
