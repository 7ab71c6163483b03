"""Curvature of a batch loss with respect to the network outputs: providers and their registry.

Each curvature is a :class:`CurvatureProvider` that turns a :class:`CurvatureContext` (the
flattened outputs y: (N, m), per-sample gradients g: (N, m), the loss and options) into a
:class:`CurvatureEstimate` (dense blocks, a shared matrix, a matvec or a low-rank factor).
Built-in providers (docs/PAPER.md §1):

==================  ==========================================  =======================
name                C                                           module
==================  ==========================================  =======================
``hessian``         ``H_i = ∇²ℓ_i(y_i)`` per sample             :mod:`.hessian`
``hessian_batch``   ``(1/N) Σ_j H_j``, all-reduced              :mod:`.hessian`
``fisher``          ``(1/N) Σ_i g_i g_iᵀ``, all-reduced         :mod:`.fisher`
``gauss_newton``    ``J_iᵀ ∇²h_i J_i`` for ``ℓ = h ∘ a``        :mod:`.gauss_newton`
==================  ==========================================  =======================

:func:`register_curvature` adds one; :mod:`.second_order` checks that autograd's second
derivatives are complete; :mod:`.chunking` batches the backward passes.
"""
from .chunking import batched_grad, choose_chunk_size, pick_chunk_size
from .composite import CompositeLoss
from .estimate import CurvatureEstimate
from .fisher import EmpiricalFisher, all_reduce_sum, empirical_fisher
from .gauss_newton import GaussNewton, gauss_newton_blocks, gauss_newton_matvec
from .hessian import BatchHessian, HessianBlocks, hessian_blocks, hessian_blocks_vmap, hessian_matvec
from .provider import CurvatureContext, CurvatureProvider
from .registry import BUILTIN_CURVATURES, available_curvatures, get_curvature, register_curvature
from .second_order import NotTwiceDifferentiableError

__all__ = [
    "CurvatureEstimate",
    "CurvatureContext",
    "CurvatureProvider",
    "CompositeLoss",
    "NotTwiceDifferentiableError",
    "register_curvature",
    "get_curvature",
    "available_curvatures",
    "BUILTIN_CURVATURES",
    "HessianBlocks",
    "BatchHessian",
    "EmpiricalFisher",
    "GaussNewton",
    "batched_grad",
    "choose_chunk_size",
    "pick_chunk_size",
    "hessian_blocks",
    "hessian_blocks_vmap",
    "hessian_matvec",
    "empirical_fisher",
    "all_reduce_sum",
    "gauss_newton_blocks",
    "gauss_newton_matvec",
]
