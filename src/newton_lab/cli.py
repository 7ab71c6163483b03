"""The ``newton-losses`` command (also ``python -m newton_lab``).

    newton-losses train ranking|shortest-path [options]   one run (docs/EXPERIMENTS.md)
    newton-losses sweep CONFIG.json [--workers K]          a grid of runs in worker processes
    newton-losses report RUNS... [--out DIR]               markdown table, Welch tests, CSV/JSON, plots
    newton-losses plot gradients [--out FILE]              gradient of a relaxed sorting loss vs Newton
    newton-losses demo [--ranking]                         optimization demo / short real ranking runs
    newton-losses bench                                    curvature cost
    newton-losses data show OUT.png                        sample data
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

COMMANDS = ("train", "sweep", "report", "plot", "demo", "bench", "data")
# Dependencies of the harness (lab/pyproject.toml) that an install by hand may lack: progress
# bars, Welch tests, plots.
EXTRAS = ("tqdm", "scipy", "matplotlib")


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="newton-losses",
        description="Newton losses for PyTorch (Petersen et al., NeurIPS 2024).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("train", help="one training run: `train ranking ...`, `train shortest-path ...` or `train pto ...`",
                   add_help=False)
    sub.add_parser("sweep", help="a grid of runs from a JSON config, in parallel, resumable",
                   add_help=False)
    sub.add_parser("report", help="tables (mean ± std, Welch t-tests), CSV/JSON and plots of runs",
                   add_help=False)
    sub.add_parser("plot", help="`plot gradients`: gradient of a relaxed sorting loss vs its Newton loss",
                   add_help=False)
    sub.add_parser("demo", help="optimization demo on free scores; `demo --ranking`: short real "
                   "ranking runs, baseline vs Newton loss", add_help=False)
    sub.add_parser("bench", help="curvature cost relative to a plain backward pass", add_help=False)
    sub.add_parser("data", help="data sets: `data show OUT.png` draws sample data", add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        return _dispatch(parser, command, rest)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in EXTRAS:
            raise
        print(f"newton-losses {command}: needs the package {missing!r}, a dependency of the harness; "
              "install it with its dependencies: pip install -e ./lab (from the repository)",
              file=sys.stderr)
        return 2


def _dispatch(parser: argparse.ArgumentParser, command: str, rest: list[str]) -> int:
    if command == "train":
        from newton_lab.commands import train_main

        return train_main(rest)
    if command == "sweep":
        from newton_lab.commands import sweep_main

        return sweep_main(rest)
    if command == "report":
        from newton_lab.commands import report_main

        return report_main(rest)
    if command == "plot":
        from newton_lab.commands import plot_main

        return plot_main(rest)
    if command == "demo":
        if "--ranking" in rest:
            from newton_lab.commands import demo_ranking_main

            return demo_ranking_main([a for a in rest if a != "--ranking"])
        from newton_lab.demo import main as demo_main

        return demo_main(rest)
    if command == "bench":
        from newton_lab.bench import main as bench_main

        return bench_main(rest)
    if command == "data":
        usage = "usage: newton-losses data show [OUT.png] [options]"
        if rest and rest[0] in ("-h", "--help"):
            print(f"{usage}\n\nsubcommands:\n  show  draw sample ranking sets and terrain maps "
                  "into a PNG (`newton-losses data show --help`)")
            return 0
        if not rest or rest[0] != "show":
            parser.error(usage)
        from newton_lab.data.show import main as show_main

        return show_main(rest[1:])
    parser.error(f"unknown command {command!r}; choose from: {', '.join(COMMANDS)}")
    return 2
