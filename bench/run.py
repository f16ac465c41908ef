"""Run the benchmarks, write bench/results/<name>.json each, regenerate docs/BENCHMARKS.md.

    python -m bench.run --all              every registered benchmark, full size    (make bench)
    python -m bench.run --quick            the quick ones, at their quick size      (make bench-quick)
    python -m bench.run --only NAME [...]  the named ones (full size; add --quick for the quick size)
    python -m bench.run --list             what is registered
    python -m bench.render                 only regenerate docs/BENCHMARKS.md from bench/results/

Adding a benchmark: write `run(quick: bool) -> dict` in a module of bench/ and add one line to
BENCHMARKS below. The dict holds at least "metrics", "baseline" and "ratio" (a number or a dict of
numbers, the measured figure divided by the baseline measured in the same run), and may hold "table"
({"columns": [...], "rows": [[...]]}, shown in the docs), "notes" (list of strings) and anything else.
The harness adds "name", "command", "date", "machine" and "seconds". A quick run writes
bench/results/<name>.quick.json, a full run bench/results/<name>.json; the docs show both, each with
its command, machine and date.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import render
from bench.common import RESULTS, machine, now_iso, write_json

# name -> ("module:function", part of --quick). The function is run(quick: bool) -> result dict.
BENCHMARKS: dict[str, tuple[str, bool]] = {
    "preprocess": ("bench.preprocess_bench:run", True),
    "batch": ("bench.batch_bench:run", True),
    "batch_scale": ("bench.batch_scale_bench:run", True),
    "sentiment": ("bench.sentiment_bench:run", False),
    "train": ("bench.train_bench:run", False),
}


def resolve(target: str) -> Callable[..., dict[str, Any]]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def result_path(name: str, *, quick: bool) -> Path:
    return RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")


def run_one(name: str, *, quick: bool, command: str) -> dict[str, Any]:
    target, _ = BENCHMARKS[name]
    print(f"[bench] {name} ({'quick' if quick else 'full'}) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    body = resolve(target)(quick=quick)
    missing = [k for k in ("metrics", "baseline", "ratio") if k not in body]
    if missing:
        raise ValueError(f"benchmark {name} returned no {missing}; see bench/run.py for the result format")
    result = {
        "name": name,
        "command": command,
        "date": now_iso(),
        "machine": machine(),
        "quick": quick,
        "seconds": round(time.monotonic() - started, 1),
        **body,
    }
    path = result_path(name, quick=quick)
    write_json(path, result)
    print(
        f"[bench] {name}: wrote {path.relative_to(RESULTS.parent.parent)} in {result['seconds']:.0f}s",
        file=sys.stderr,
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every benchmark, full size")
    which.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks")
    which.add_argument("--list", action="store_true", help="list the registered benchmarks")
    parser.add_argument("--quick", action="store_true", help="the quick benchmarks at their quick size")
    args = parser.parse_args(argv)
    if not (args.all or args.only or args.list or args.quick):
        parser.error("say which benchmarks: --all, --quick, --only NAME ... or --list")
    if args.list:
        for name, (target, quick) in BENCHMARKS.items():
            print(f"{name:<20} {target:<40} {'quick' if quick else ''}")
        return 0
    if args.only:
        unknown = [n for n in args.only if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; registered: {sorted(BENCHMARKS)}")
        names = list(args.only)
    elif args.all:
        names = list(BENCHMARKS)
    else:
        names = [n for n, (_, quick) in BENCHMARKS.items() if quick]
    command = "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    failed = []
    for name in names:
        try:
            run_one(name, quick=args.quick, command=command.strip())
        except Exception:  # one failing benchmark must not lose the others' results
            traceback.print_exc()
            failed.append(name)
    out = render.write_docs()
    print(f"[bench] regenerated {out.relative_to(RESULTS.parent.parent)}", file=sys.stderr)
    if failed:
        print(f"[bench] FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
