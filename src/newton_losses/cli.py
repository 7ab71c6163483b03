"""The ``newton-losses`` command (also ``python -m newton_losses``)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="newton-losses",
        description="Newton losses for PyTorch (Petersen et al., NeurIPS 2024).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="train through a relaxed ranking loss: baseline vs Newton losses",
                   add_help=False)
    sub.add_parser("bench", help="curvature cost relative to a plain backward pass", add_help=False)
    sub.add_parser("data", help="data sets: `data show OUT.png` draws sample data", add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if command == "bench":
        from .bench import main as bench_main

        return bench_main(rest)
    if command == "data":
        if not rest or rest[0] != "show":
            parser.error("usage: newton-losses data show OUT.png [--seed S] [--size H]")
        from .data.show import main as show_main

        return show_main(rest[1:])
    parser.error(f"unknown command {command!r}; choose from: demo, bench, data")
    return 2
