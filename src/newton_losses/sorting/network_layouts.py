"""Comparator layouts of the sorting networks: which pairs of positions are compared in each layer.

A layout is data-independent and built once per (network, n) in plain Python. It is expressed on
n *slots*, one per input item:

- ``layers``: a list of layers; each layer is a list of disjoint comparators ``(lo, hi)`` of
  slots. After the comparator, slot ``lo`` holds the minimum and slot ``hi`` the maximum.
- ``output``: a list of n slots; position j of the ascending result is read from slot ``output[j]``.

Networks:

- ``"odd_even"``: odd-even transposition sort, n layers alternately comparing positions
  (0,1),(2,3),… and (1,2),(3,4),…; any n >= 2. This is the odd-even network of diffsort.
- ``"bitonic"``: Batcher's bitonic sorter on 2^k >= n wires, log2(2^k)(log2(2^k)+1)/2 layers.
  For n < 2^k the first 2^k - n wires are padded with −∞. A comparator that meets a −∞ wire has a
  known outcome (−∞ goes to its min side), so it is resolved here, in the layout, as a fixed
  relabelling of slots; no −∞ ever reaches the arithmetic. The padded network sorts the padded
  input exactly, so the relaxation is exact in the hard limit for every n, and the n real values
  leave on the last n wires.
"""

from __future__ import annotations

from typing import NamedTuple

NETWORKS = ("odd_even", "bitonic")


class Layout(NamedTuple):
    """Comparators per layer on n slots and the slot read by each output position."""

    n: int
    layers: list[list[tuple[int, int]]]
    output: list[int]


def network_layout(network: str, n: int) -> Layout:
    """Layout of ``network`` ("odd_even" or "bitonic") for n >= 2 items; see the module docstring."""
    if network == "odd_even":
        return _odd_even(n)
    if network == "bitonic":
        return _bitonic(n)
    raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")


def _odd_even(n: int) -> Layout:
    layers = [[(i, i + 1) for i in range(layer % 2, n - 1, 2)] for layer in range(n)]
    return Layout(n, [layer for layer in layers if layer], list(range(n)))


def _bitonic(n: int) -> Layout:
    wires = 1 << (n - 1).bit_length()
    pad = wires - n
    slot_on: list[int | None] = [None] * pad + list(range(n))  # None: a −∞ padding value
    layers = []
    block = 2
    while block <= wires:
        span = block // 2
        while span >= 1:
            layer = []
            for lo in range(wires):
                hi = lo + span
                if lo & span or hi >= wires:
                    continue
                min_wire, max_wire = (lo, hi) if lo & block == 0 else (hi, lo)
                slot_min, slot_max = slot_on[min_wire], slot_on[max_wire]
                if slot_min is None:
                    continue  # −∞ already on the min side, or both are −∞
                if slot_max is None:
                    slot_on[min_wire], slot_on[max_wire] = None, slot_min
                    continue
                layer.append((slot_min, slot_max))
            if layer:
                layers.append(layer)
            span //= 2
        block *= 2
    output = [slot for slot in slot_on[pad:] if slot is not None]
    if len(output) != n:
        raise RuntimeError(f"bitonic layout for n={n} left padding on an output wire: {slot_on}")
    return Layout(n, layers, output)
