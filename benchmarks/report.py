"""Markdown tables of the op benchmark results, for the README.

    python -m benchmarks.report [FILE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .harness import RESULTS_DIR


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    machine = data["machine"]
    where = machine.get("gpu") or f"{machine.get('cpu', 'CPU')}, {machine.get('cpu_threads')} threads"
    shown = path.relative_to(RESULTS_DIR.parent.parent) if path.is_relative_to(RESULTS_DIR.parent.parent) else path
    lines = [
        f"**{where}**, torch {machine['torch']}, {machine['date']}, copy bandwidth {data['copy_gbs']:.0f} GB/s"
        f" (`{shown}`)",
        "",
        "| op | shape | dtype | pass | ext ms | eager ms | compiled ms | x eager | x compiled | of copy "
        "| of same-size copy |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['pass']} | {_cell(r['extension_ms'], '.3f')} | "
            f"{_cell(r['reference_ms'], '.3f')} | {_cell(r['compiled_ms'], '.3f')} | "
            f"{_cell(r['speedup_vs_reference'], '.2f')} | {_cell(r['speedup_vs_compiled'], '.2f')} | "
            f"{_cell(r['fraction_of_copy'], '.0%')} | {_cell(r.get('fraction_of_same_size_copy'), '.0%')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", metavar="FILE", help="op benchmark results (default: "
                        "benchmarks/results/ops_*.json)")
    paths = [Path(p) for p in parser.parse_args(argv).files] or sorted(RESULTS_DIR.glob("ops_*.json"))
    if not paths:
        sys.exit(f"no op benchmark results in {RESULTS_DIR}: run python -m benchmarks.ops first")
    tables = []
    for path in paths:
        try:
            tables.append(table(path.resolve()))
        except OSError as error:
            sys.exit(f"{path}: cannot read it ({error.strerror or error})")
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            sys.exit(f"{path}: not an op benchmark results file ({type(error).__name__}: {error})")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
