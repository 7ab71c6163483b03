"""Optional integrations with other packages (extras of the ``newton-losses`` distribution).

Nothing here is imported by ``import newton_losses``; each integration imports its package inside
the functions that need it and says how to install it when it is missing.

- :mod:`newton_losses.integrations.pyepo` (extra ``[pyepo]``): second order for PyEPO's perturbed
  losses — DPO (``perturbedOpt`` + a loss on its expected solution) and PFYL
  (``perturbedFenchelYoung``) with a PyEPO ``optModel`` as the solver, and their Hessian and
  Gauss-Newton estimators for :class:`~newton_losses.NewtonLoss` (docs/PYEPO.md).
- :mod:`newton_losses.integrations.pyepo_grid` (torch only): an exact batched solver for PyEPO's
  grid shortest path (dynamic programming over the whole batch).
"""
