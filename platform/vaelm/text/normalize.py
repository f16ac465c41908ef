"""Decode and clean document text. Pure functions; the order of steps makes `normalize` idempotent.

Steps of `normalize`, in order:
1. line breaks (CR LF, CR, VT, FF, NEL, U+2028, U+2029) become "\\n"; lone surrogates become U+FFFD
   (they cannot be written as UTF-8);
2. control characters (Cc, except "\\n" and "\\t") and invisible format characters are removed;
3. the Unicode normal form is applied (after removal, so a removed character cannot block a
   composition that a second pass would then make);
4. whitespace is collapsed: runs of horizontal whitespace (including U+3000) become one space,
   lines are stripped, at most one blank line is kept, and both ends are stripped.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal, NamedTuple

from vaelm.config.text import NormalizeConfig

_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
_ZERO_WIDTH = re.compile("[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")


class DecodeResult(NamedTuple):
    """Text decoded from bytes: `text` is None exactly when `reason` says why it was rejected."""

    text: str | None
    reason: str | None
    replaced: bool
    """True when invalid bytes were replaced with U+FFFD."""


def decode_text(raw: bytes, *, policy: Literal["replace", "reject"]) -> DecodeResult:
    """Decode UTF-8 bytes. Invalid bytes become U+FFFD ('replace') or reject the document ('reject')."""
    try:
        return DecodeResult(raw.decode("utf-8"), None, False)
    except UnicodeDecodeError as exc:
        if policy == "reject":
            return DecodeResult(None, f"invalid_utf8:byte_{exc.start}", False)
        return DecodeResult(raw.decode("utf-8", errors="replace"), None, True)


def normalize(text: str, cfg: NormalizeConfig) -> str:
    """Clean one document's text as `cfg` says (see the module docstring for the steps)."""
    text = replace_surrogates(_LINE_BREAKS.sub("\n", text))
    if cfg.strip_control:
        text = _CONTROL.sub("", text)
    if cfg.strip_zero_width:
        text = _ZERO_WIDTH.sub("", text)
    if cfg.form != "none":
        text = unicodedata.normalize(cfg.form, text)
    if cfg.collapse_whitespace:
        text = collapse_whitespace(text)
    return text


def replace_surrogates(text: str) -> str:
    """Replace lone surrogates (which no UTF-8 writer or tokenizer accepts) with U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def collapse_whitespace(text: str) -> str:
    """One space per run of horizontal whitespace, stripped lines, at most one blank line, stripped ends."""
    text = _HORIZONTAL_SPACE.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()
