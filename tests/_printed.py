"""Checking a number a script printed against the value it stands for.

A value printed as ``1.34`` can be anything in [1.335, 1.345]: a tolerance chosen by hand
(``rel=2e-3``) is tighter than that for some values and passes or fails by luck of where the
processor's float results happen to round (CI runs on Intel and AMD machines). The tolerance here
is read off the printed text itself.
"""


def half_unit(text: str) -> float:
    """Half a unit in the last printed digit of ``text``: the most by which a correctly rounded
    printout differs from the value ('1.34' → 0.005, '0.0404' → 5e-05, '5.9e-11' → 5e-13,
    '134' → 0.5). Formats that drop trailing zeros (``:g``) make this larger than the format's
    own rounding, never smaller."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def matches_printed(text: str, exact: float, *, rtol: float = 1e-9, atol: float = 0.0) -> bool:
    """Whether ``text`` is ``exact`` printed: within half a unit of its last digit, plus ``rtol``
    (relative to ``exact``) and ``atol`` for how far the printing code's float computation may be
    from the test's. The default ``rtol`` covers only the decimal-to-binary conversion: pass more
    where the two sides are computed by different code paths or in different precisions."""
    return abs(float(text) - exact) <= half_unit(text) + rtol * abs(exact) + atol
