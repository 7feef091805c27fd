"""``python -m seqlens.demo OUTPUT [--results FILE]``: build the demo repository into OUTPUT and
print (or write) the held-out results table that RESULTS.md holds."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import build_demo
from .report import markdown_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seqlens.demo", description=__doc__)
    parser.add_argument("output", type=Path, help="repository folder to write (<output>/<model>/1/)")
    parser.add_argument("--results", type=Path, help="write the markdown table here instead of stdout")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = build_demo(args.output)
    table = markdown_table(results) + f"\nTotal build: {time.perf_counter() - start:.0f} s.\n"
    if args.results:
        args.results.write_text(table, encoding="utf-8")
    else:
        print(table)


if __name__ == "__main__":
    main()
