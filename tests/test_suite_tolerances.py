"""The suite's own yardstick for printed numbers (tests/_printed.py): the tolerance is read off the
printed digits, so it is never tighter than the printout (issue 22: a value printed as 1.34 was
compared with rel=2e-3 and failed on AMD machines by luck of rounding)."""
import pytest

from _printed import half_unit, matches_printed


@pytest.mark.parametrize("text, half", [("1.34", 0.005), ("0.0404", 5e-5), ("134", 0.5), ("5.9e-11", 5e-13),
                                        ("1.2E+03", 50.0), ("-0.50", 0.005), ("1", 0.5)])
def test_half_unit_of_the_last_printed_digit(text, half):
    assert half_unit(text) == pytest.approx(half, rel=1e-12)


def test_a_printed_value_matches_everything_it_rounds_from_and_nothing_else():
    # The failing case of issue 22: 1.3359 prints as 1.34 (f"{1.3359:.3g}"), 0.31% away.
    assert f"{1.3359:.3g}" == "1.34" and matches_printed("1.34", 1.3359)
    assert 1.34 != pytest.approx(1.3359, rel=2e-3)  # the hand-chosen tolerance it replaces
    for exact in (1.335, 1.3449999, 0.000123456, 98765.4, 3.3e-9):
        assert matches_printed(f"{exact:.3g}", exact) and matches_printed(f"{exact:.2e}", exact)
    assert not matches_printed("1.34", 1.3349) and not matches_printed("1.34", 1.3451)
    assert not matches_printed("1.34", 1.34 * 1.005)  # an error of 0.5% is still caught
    # atol and rtol widen it for values computed by another code path (float32 against float64).
    assert matches_printed("0.115", 0.1155009, atol=1e-6) and not matches_printed("0.115", 0.1155011, atol=1e-6)
