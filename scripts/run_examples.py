"""Run every examples/*.py at full size and record its output in docs/examples/NAME.txt.

    OMP_NUM_THREADS=1 python scripts/run_examples.py               # all of them, one after another
    OMP_NUM_THREADS=1 python scripts/run_examples.py wrap_your_loss precision_check

Each example runs as a subprocess from the repository root with one thread (OMP_NUM_THREADS=1),
with its default arguments (train_your_own.py in a temporary directory, where it writes its
runs/). Its stdout is written to docs/examples/NAME.txt, which the documentation site shows
below the script; stderr (warnings, progress bars) is not recorded. An example that fails — or
exits because an optional package is missing — leaves its recorded output as it was, and the
script exits with status 1 after the others. Printed at the end: a table of wall-clock and CPU
times (user + system, the example's processes together) for examples/README.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
OUT = ROOT / "docs" / "examples"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(name: str, tmp: Path) -> tuple[int, float, float]:
    """Run examples/NAME.py; record its output if it succeeds. Returns (status, wall s, CPU s)."""
    # train_your_own.py writes run directories under runs/ of the working directory: a scratch one
    cwd = tmp if name == "train_your_own" else ROOT
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode == 0:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{name}.txt").write_text(proc.stdout.rstrip("\n") + "\n", encoding="utf-8")
    else:
        print(f"examples/{name}.py exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}", file=sys.stderr)
    return proc.returncode, wall, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="examples to run (default: all of examples/*.py)")
    args = p.parse_args(argv)
    names = args.names or sorted(s.stem for s in EXAMPLES.glob("*.py"))
    unknown = [n for n in names if not (EXAMPLES / f"{n}.py").is_file()]
    if unknown:
        p.error(f"no such example: {', '.join(unknown)}")
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"running examples/{name}.py ...", file=sys.stderr, flush=True)
            status, wall, cpu = run(name, Path(tmp))
            rows.append((name, status, wall, cpu))
            if status:
                failed.append(name)
    print(f"\n{_cpu_name()}, {os.cpu_count()} logical CPUs, one thread per process, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| example | wall s | CPU s | output |")
    print("|---|---:|---:|---|")
    for name, status, wall, cpu in rows:
        where = f"docs/examples/{name}.txt" if status == 0 else f"failed (exit {status})"
        print(f"| `{name}.py` | {wall:.0f} | {cpu:.0f} | {where} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
