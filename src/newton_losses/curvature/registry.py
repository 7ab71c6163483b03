"""The one registry of curvatures: name -> :class:`~newton_losses.curvature.CurvatureProvider`.

``NewtonLoss(loss, curvature=name)`` looks the name up here. Adding a built-in curvature is
one provider module and one entry in ``_BUILTIN`` below; a user adds one with
:func:`register_curvature` without editing the package.
"""
from __future__ import annotations

from typing import Callable, Union

from .fisher import EmpiricalFisher
from .gauss_newton import GaussNewton
from .hessian import BatchHessian, HessianBlocks
from .provider import CurvatureContext, CurvatureProvider, FunctionProvider
from .estimate import CurvatureEstimate

__all__ = ["BUILTIN_CURVATURES", "available_curvatures", "get_curvature", "register_curvature"]

_BUILTIN = {
    "hessian": HessianBlocks(),
    "hessian_batch": BatchHessian(),
    "fisher": EmpiricalFisher(),
    "gauss_newton": GaussNewton(),
}
BUILTIN_CURVATURES = tuple(_BUILTIN)
"""The built-in curvature names ``NewtonLoss(curvature=...)`` accepts without registration:
``"hessian"``, ``"hessian_batch"``, ``"fisher"``, ``"gauss_newton"``; more with
:func:`register_curvature`."""
# "none" is the harness's name for no curvature (the plain loss); "custom" labels a callable
# curvature in NewtonDiagnostics.
_RESERVED = ("none", "custom")
_REGISTRY: dict = dict(_BUILTIN)


def register_curvature(
    name: str,
    provider: Union[CurvatureProvider, Callable[[CurvatureContext], CurvatureEstimate]],
    *,
    override: bool = False,
) -> CurvatureProvider:
    """Make ``NewtonLoss(..., curvature=name)`` use ``provider``; returns the registered provider.

    Args:
        name: a lower-case identifier (``[a-z][a-z0-9_]*``), not ``"none"`` or ``"custom"``.
        provider: a :class:`CurvatureProvider` instance, or a function
            ``estimate(ctx: CurvatureContext) -> CurvatureEstimate`` (a first-order provider).
        override: replace an existing registration (built-ins included) instead of raising.

    Raises:
        ValueError: ``name`` is already registered and ``override`` is False, or is not a
            lower-case identifier.
        TypeError: ``name`` is not a string or ``provider`` is neither of the above.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string; got {name!r}")
    # Names become part of file names (run ids) and command-line values: keep them plain.
    if not (name[0].isalpha() and name.isascii() and all(c.isalnum() or c == "_" for c in name)
            and name == name.lower()) or name in _RESERVED:
        raise ValueError(
            f"curvature name must be a lower-case identifier ([a-z][a-z0-9_]*) other than "
            f"{' and '.join(map(repr, _RESERVED))}; got {name!r}"
        )
    if isinstance(provider, type):
        raise TypeError(f"provider must be an instance, not the class {provider.__name__}; pass {provider.__name__}()")
    if not isinstance(provider, CurvatureProvider):
        if not callable(provider):
            raise TypeError(
                "provider must be a CurvatureProvider or a function ctx -> CurvatureEstimate; "
                f"got {type(provider).__name__}"
            )
        provider = FunctionProvider(provider)
    if name in _REGISTRY and not override:
        raise ValueError(
            f"curvature {name!r} is already registered ({type(_REGISTRY[name]).__name__}); "
            "pass override=True to replace it"
        )
    _REGISTRY[name] = provider
    return provider


def get_curvature(name: str) -> CurvatureProvider:
    """The provider registered as ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"curvature must be one of {available_curvatures()} (or a callable); got {name!r}"
        ) from None


def available_curvatures() -> tuple:
    """Names of all registered curvatures, built-ins first."""
    return tuple(_REGISTRY)
