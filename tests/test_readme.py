"""The README's first screen holds: its quickstart is examples/quickstart.py verbatim (which
the release test runs from a fresh wheel install, and tests/test_examples.py runs here), its
links point at files that exist, and its figure's command is named next to it."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_quickstart_is_examples_quickstart_verbatim():
    blocks = _python_blocks(README)
    assert blocks, "the README has no python block"
    assert blocks[0] == (ROOT / "examples" / "quickstart.py").read_text(), (
        "README's quickstart and examples/quickstart.py differ: edit one, copy it to the other")


def test_the_quickstart_fits_the_first_screens():
    quick = _python_blocks(README)[0]
    assert len([l for l in quick.splitlines() if l.strip()]) <= 14
    assert README.index("## Quickstart") < README.index("## What we measured")


def test_relative_links_resolve():
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if "://" in target:
            continue
        if not (ROOT / target).exists():
            missing.append(target)
    assert not missing, f"README links to missing files: {missing}"


def test_every_figure_names_its_command():
    for m in re.finditer(r"!\[[^\]]*\]\(([^)]+)\)", README):
        after = README[m.end():m.end() + 400]
        assert re.search(r"`(python |newton-losses |make )[^`]*`", after), (
            f"the figure {m.group(1)} has no command next to it")
