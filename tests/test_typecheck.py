"""The library type-checks clean: mypy (configured in pyproject.toml's [tool.mypy]) on
src/newton_losses. mypy rather than pyright: pure Python, pinned in constraints.txt like the
other test tools, no Node.js runtime and nothing downloaded at check time. Skipped where mypy is
not installed (it comes with the lab's dev extra, which `make test` installs)."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(find_spec("mypy") is None, reason="mypy is not installed (pip install -e './lab[dev]')")
def test_mypy_is_clean_on_the_library():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The configuration is the root pyproject.toml's. About 30 s on two busy cores from a cold
    # cache (.mypy_cache/, ignored by git), a few seconds after that.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         str(ROOT / "src" / "newton_losses")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, f"mypy found type errors in the library:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout, proc.stdout


def test_the_package_is_marked_typed():
    assert (ROOT / "src" / "newton_losses" / "py.typed").is_file()
