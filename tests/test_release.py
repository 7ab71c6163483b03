"""A checked release: ``python -m build`` makes an sdist and a wheel that ``twine check --strict``
accepts, the sdist holds the library and its metadata only (no results/, runs/, .venv, harness or
tests), the version agrees everywhere it is written, and the wheel installs into a fresh virtual
environment, with torch pinned by constraints.txt, and runs the README's quickstart
(examples/quickstart.py) there.

torch is never downloaded: it is first installed into the new environment from a local wheel only
(pip's find-links, ``--no-index``), and the test is skipped where no local torch wheel matches the
pin (plain PyPI would serve a multi-GB CUDA build). The other dependencies (numpy and torch's own)
come from the package index as configured.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"

pytestmark = [
    pytest.mark.skipif(find_spec("build") is None, reason="needs `build` (the lab's dev extra)"),
    pytest.mark.skipif(find_spec("twine") is None, reason="needs `twine` (the lab's dev extra)"),
]

# What the sdist may hold besides src/newton_losses/ (setuptools adds PKG-INFO, setup.cfg and the
# egg-info); everything else of the repository stays out (MANIFEST.in).
SDIST_TOP_LEVEL = {
    "CHANGELOG.md", "CITATION.cff", "LICENSE", "MANIFEST.in", "PKG-INFO", "README.md",
    "pyproject.toml", "setup.cfg",
}


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)  # nothing of the checkout may leak into the fresh environment
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _version() -> str:
    text = (ROOT / "src" / "newton_losses" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, flags=re.M)
    assert match, "src/newton_losses/__init__.py has no __version__ line"
    return match.group(1)


def _torch_pin() -> str:
    pins = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    torch = [p for p in pins if re.match(r"torch\s*==", p)]
    assert torch, "constraints.txt must pin torch exactly (torch==X.Y.Z)"
    return torch[0]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel built from the unpacked sdist (build's default): a file the
    # sdist lacks fails the wheel. --no-isolation: setuptools from this environment, no download.
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], timeout=300)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0]}


def test_twine_check_strict_accepts_both(dists):
    proc = _run([sys.executable, "-m", "twine", "check", "--strict", str(dists["sdist"]), str(dists["wheel"])],
                timeout=120)
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_the_version_agrees_everywhere():
    version = _version()
    assert re.search(rf"^version: {re.escape(version)}$", (ROOT / "CITATION.cff").read_text(), flags=re.M), (
        "CITATION.cff's version differs from newton_losses.__version__")
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$",
                     (ROOT / "CHANGELOG.md").read_text(), flags=re.M), f"CHANGELOG.md has no section for {version}"


def test_citation_cff_names_this_software_and_the_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software" and cff["message"] and cff["authors"] and cff["title"]
    assert str(cff["version"]) == _version() and cff["license"] == "MIT"
    paper = [r for r in cff.get("references", []) if r["title"].startswith("Newton Losses")]
    assert len(paper) == 1 and paper[0]["year"] == 2024
    assert [a["family-names"] for a in paper[0]["authors"]] == [
        "Petersen", "Borgelt", "Sutter", "Kuehne", "Deussen", "Ermon"]
    if find_spec("cffconvert") is not None:  # the schema itself (cffconvert pins an old jsonschema,
        # so it is no dependency of ours: `pip install cffconvert` to run this part)
        _run([sys.executable, "-c", "from cffconvert.cli.cli import cli; cli()", "--validate", "-i",
              str(ROOT / "CITATION.cff")], timeout=120)


def test_the_sdist_holds_the_library_and_its_metadata_only(dists):
    version = _version()
    prefix = f"newton_losses-{version}/"
    assert dists["sdist"].name == f"newton_losses-{version}.tar.gz"
    with tarfile.open(dists["sdist"]) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    assert all(n.startswith(prefix) for n in names), names
    stray = []
    for name in (n[len(prefix):] for n in names):
        if name in SDIST_TOP_LEVEL or name.startswith(("src/newton_losses/", "src/newton_losses.egg-info/")):
            if "__pycache__" not in name and not name.endswith(".pyc"):
                continue
        stray.append(name)
    assert not stray, f"the sdist holds files outside the library and its metadata: {stray[:20]}"
    assert f"{prefix}src/newton_losses/py.typed" in names
    sources = {n for n in names if n.endswith(".py")}
    expected = {f"{prefix}{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "src" / "newton_losses").rglob("*.py")}
    assert sources == expected, f"missing: {sorted(expected - sources)}; extra: {sorted(sources - expected)}"


def test_the_wheel_is_typed_and_holds_the_library_only(dists):
    version = _version()
    assert dists["wheel"].name == f"newton_losses-{version}-py3-none-any.whl"
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        metadata = whl.read(f"newton_losses-{version}.dist-info/METADATA").decode()
    assert "newton_losses/py.typed" in names
    assert all(n.startswith(("newton_losses/", f"newton_losses-{version}.dist-info/")) for n in names), names
    assert f"\nVersion: {version}\n" in metadata
    assert "Typing :: Typed" in metadata
    for extra in ("pyepo", "diffsort", "docs", "dev"):
        assert f"Provides-Extra: {extra}\n" in metadata, extra


# About 75 s on two busy cores (most of it unpacking torch). In the default suite, so that CI
# checks what a user's install does; numpy and torch's dependencies come from the package index,
# as for `make test`'s own environment.
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_quickstart(dists, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--only-binary=:all:", "-c", str(CONSTRAINTS)]
    # torch from a local wheel only: never let pip fetch a build from the index.
    torch = subprocess.run(pip + ["--no-index", "--no-deps", _torch_pin()], capture_output=True, text=True,
                           timeout=600)
    if torch.returncode != 0:
        pytest.skip(f"no local wheel for {_torch_pin()} (pip's find-links); the index would serve a "
                    f"multi-GB build:\n{torch.stderr[-1000:]}")
    _run(pip + [str(dists["wheel"])], timeout=600)

    work = tmp_path / "work"  # run outside the checkout: only the installed package is importable
    work.mkdir()
    probe = _run([str(python), "-c", "import newton_losses, torch; print(newton_losses.__version__); "
                  "print(newton_losses.__file__); print(torch.__version__)"], timeout=300, cwd=work)
    version, location, torch_version = probe.stdout.split()
    assert version == _version()
    assert Path(location).is_relative_to(env_dir), location
    assert (Path(location).parent / "py.typed").is_file()
    assert torch_version.split("+")[0] == _torch_pin().split("==")[1].strip()

    script = work / "quickstart.py"
    script.write_text((ROOT / "examples" / "quickstart.py").read_text())
    run = _run([str(python), str(script)], timeout=600, cwd=work)
    assert "sets ranked exactly:" in run.stdout, run.stdout
