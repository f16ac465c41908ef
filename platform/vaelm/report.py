"""`vaelm report RUN_DIR`: a self-contained HTML report of a run directory (the demo's `workdir`).

The run directory holds one folder per job (`RUN_LAYOUT`): dataset/, model/, classifier/, classify/,
generate/samples/, generate/interpolations/, embed/, score/ and the demo's demo.json. The report reads
what is there through vaelm's storage layer (local or s3://) and renders one HTML file with every figure
inlined as a base64 PNG, so it opens anywhere without a network. A section whose input is missing or
incomplete says so ("not run") instead of failing the report.
"""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vaelm import storage
from vaelm.config.common import StorageConfig
from vaelm.config.demo import RUN_LAYOUT
from vaelm.pipeline.commit import RUN_FILE, SUCCESS
from vaelm.storage import Location

DEMO_FILE = "demo.json"
REPORT_FILE = "report.html"


class NotRun(Exception):
    """A section's input is missing or incomplete: the section shows this message instead."""


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    body: str


class RunFiles:
    """Read access to the job outputs of one run directory; missing inputs raise NotRun."""

    def __init__(self, run_dir: str, storage_cfg: StorageConfig | None = None) -> None:
        self.uri = run_dir
        self.root = storage.open_location(run_dir, storage_cfg)

    def loc(self, stage: str, *parts: str) -> Location:
        return self.root.join(RUN_LAYOUT.get(stage, stage), *parts)

    def status(self, stage: str) -> str:
        if storage.exists(self.loc(stage, SUCCESS)):
            return "complete"
        return "incomplete" if storage.exists(self.loc(stage, RUN_FILE)) else "not run"

    def require(self, stage: str) -> None:
        state = self.status(stage)
        if state != "complete":
            what = "has not finished" if state == "incomplete" else "has not run"
            raise NotRun(f"the {stage} stage {what} ({self.loc(stage).uri}); rerun the demo to complete it")

    def json(self, stage: str, *parts: str) -> Any:
        loc = self.loc(stage, *parts)
        if not storage.exists(loc):
            raise NotRun(f"{loc.uri} does not exist")
        return storage.read_json(loc)

    def optional_json(self, stage: str, *parts: str) -> Any | None:
        try:
            return self.json(stage, *parts)
        except NotRun:
            return None

    def jsonl(self, stage: str, *parts: str) -> list[dict[str, Any]]:
        loc = self.loc(stage, *parts)
        if not storage.exists(loc):
            raise NotRun(f"{loc.uri} does not exist")
        return [json.loads(line) for line in storage.read_bytes(loc).decode().splitlines() if line.strip()]

    def table(self, stage: str, folder: str = "data", columns: list[str] | None = None) -> pa.Table:
        """Every Parquet file of a finished stage's `folder`, concatenated."""
        self.require(stage)
        root = self.loc(stage, folder)
        tables = [storage.read_table(root.at(e), columns=columns) for e in storage.list_files(root)]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            raise NotRun(f"{root.uri} holds no rows")
        return pa.concat_tables(tables, promote_options="default")


def write_report(run_dir: str, *, out: str | None = None, storage_cfg: StorageConfig | None = None) -> str:
    """Render the report of `run_dir` and write it to `out` (default RUN_DIR/report.html); returns its path."""
    files = RunFiles(run_dir, storage_cfg)
    target = storage.open_location(out, storage_cfg) if out else files.root.join(REPORT_FILE)
    storage.write_bytes(target, render_report(files).encode("utf-8"))
    return target.uri


def render_report(files: RunFiles) -> str:
    from vaelm import report_outputs, report_sections

    parts = report_sections.SECTIONS + report_outputs.SECTIONS
    sections = [_render(key, title, fn, files) for key, title, fn in parts]
    toc = "".join(f'<li><a href="#{s.key}">{esc(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{s.key}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return PAGE.format(title=esc(f"vaelm run report: {files.uri}"), run=esc(files.uri), toc=toc, body=body)


def _render(key: str, title: str, fn: Callable[[RunFiles], str], files: RunFiles) -> Section:
    try:
        return Section(key, title, fn(files))
    except NotRun as exc:
        return Section(key, title, note(f"Not run: {exc}", kind="notrun"))
    except Exception as exc:  # one broken input must not cost the whole report
        print(f"[vaelm] report: section {key!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Section(key, title, note(f"Could not be rendered: {type(exc).__name__}: {exc}", kind="error"))


# -- HTML helpers --------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def note(text: str, *, kind: str = "info") -> str:
    return f'<p class="note {kind}">{esc(text)}</p>'


def image(png: bytes, alt: str) -> str:
    import base64

    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(headers: list[str], rows: list[list[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", sans-serif; margin: 0 auto;
  max-width: 1180px; padding: 1.5em 2em; color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.6em; margin-bottom: 0.2em; }} h2 {{ border-bottom: 2px solid #4c72b0; padding-bottom: 0.2em; }}
h3 {{ font-size: 1.05em; margin: 1em 0 0.4em; }}
section {{ margin-bottom: 2.2em; }} img {{ max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f0f3f8; }} td.num {{ text-align: right; }}
table.kv td:first-child {{ font-weight: 600; background: #fafafa; }}
table.texts td:last-child {{ max-width: 760px; overflow-wrap: anywhere; }}
.note {{ padding: 0.6em 0.9em; border-radius: 4px; background: #eef4fb; }}
.note.notrun {{ background: #fff6e0; border-left: 4px solid #e0a800; }}
.note.error {{ background: #fde8e8; border-left: 4px solid #c44e52; }}
.headline {{ display: flex; flex-wrap: wrap; gap: 0.8em; margin: 0.6em 0; }}
.headline div {{ border: 1px solid #d5dce8; border-radius: 6px; padding: 0.5em 0.9em; min-width: 9em; }}
.headline b {{ display: block; font-size: 1.35em; }} .headline span {{ color: #555; font-size: 0.85em; }}
nav ol {{ columns: 3; }} .muted {{ color: #666; font-size: 0.9em; }}
</style></head>
<body><h1>vaelm run report</h1><p class="muted">run directory: <code>{run}</code></p>
<nav><ol>{toc}</ol></nav>
{body}
</body></html>
"""
