"""Noise filters over normalised text. Each returns None to keep a document, or the reason it drops it.

A reason is `category` or `category:detail` (e.g. "too_short:<5"); the pipeline counts rejects per
category, the part before the first ':'. `build_filters` orders the filters cheapest first, with
`too_long` before any filter that reads the whole text, so a 5 MB document costs one len() call.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial

from vaelm.config.text import FilterConfig

Filter = Callable[[str], "str | None"]

# (first code point, last code point, script), sorted; letters outside every range count as not allowed.
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x005A, "Latin"),
    (0x0061, 0x007A, "Latin"),
    (0x00AA, 0x00AA, "Latin"),
    (0x00BA, 0x00BA, "Latin"),
    (0x00C0, 0x024F, "Latin"),
    (0x0250, 0x02AF, "Latin"),
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0750, 0x077F, "Arabic"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x1100, 0x11FF, "Hangul"),
    (0x1E00, 0x1EFF, "Latin"),
    (0x1F00, 0x1FFF, "Greek"),
    (0x2C60, 0x2C7F, "Latin"),
    (0x2E80, 0x2FDF, "Han"),
    (0x3005, 0x3007, "Han"),
    (0x3021, 0x3029, "Han"),
    (0x3038, 0x303B, "Han"),
    (0x3040, 0x309F, "Hiragana"),
    (0x30A0, 0x30FF, "Katakana"),
    (0x3130, 0x318F, "Hangul"),
    (0x31F0, 0x31FF, "Katakana"),
    (0x3400, 0x4DBF, "Han"),
    (0x4E00, 0x9FFF, "Han"),
    (0xA720, 0xA7FF, "Latin"),
    (0xAB30, 0xAB6F, "Latin"),
    (0xAC00, 0xD7AF, "Hangul"),
    (0xF900, 0xFAFF, "Han"),
    (0xFB00, 0xFB06, "Latin"),
    (0xFB1D, 0xFB4F, "Hebrew"),
    (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0xFF21, 0xFF3A, "Latin"),
    (0xFF41, 0xFF5A, "Latin"),
    (0xFF66, 0xFF9F, "Katakana"),
    (0xFFA0, 0xFFDC, "Hangul"),
    (0x20000, 0x3134F, "Han"),
)
_RANGE_STARTS = [start for start, _, _ in _SCRIPT_RANGES]
TOP_NGRAM_MIN_COUNT = 3
"""The top n-gram filter ignores n-grams seen fewer times than this."""


def script_of(char: str) -> str | None:
    """The script of one character by code point range (the scripts in `SCRIPTS`), or None if unknown."""
    point = ord(char)
    i = bisect_right(_RANGE_STARTS, point) - 1
    if i >= 0 and point <= _SCRIPT_RANGES[i][1]:
        return _SCRIPT_RANGES[i][2]
    return None


def empty(text: str) -> str | None:
    """Drop documents that are empty or only whitespace."""
    return None if text and not text.isspace() else "empty"


def too_short(text: str, *, min_chars: int) -> str | None:
    """Drop documents with fewer than `min_chars` characters after normalisation."""
    return None if len(text) >= min_chars else f"too_short:<{min_chars}"


def too_long(text: str, *, max_chars: int) -> str | None:
    """Drop documents with more than `max_chars` characters; O(1), so it runs before costly filters."""
    return None if len(text) <= max_chars else f"too_long:>{max_chars}"


def _non_space_count(text: str) -> int:
    return len(text) - sum(1 for c in text if c.isspace())


def symbol_ratio(text: str, *, max_ratio: float) -> str | None:
    """Drop documents where punctuation and symbols (P*, S*, emoji and U+FFFD too) exceed `max_ratio` of non-space."""
    total = _non_space_count(text)
    symbols = sum(1 for c in text if unicodedata.category(c)[0] in "PS")
    return None if total == 0 or symbols <= max_ratio * total else f"symbol_ratio:>{max_ratio}"


def digit_ratio(text: str, *, max_ratio: float) -> str | None:
    """Drop documents where digits (ASCII, full-width, any script's) exceed `max_ratio` of non-space characters."""
    total = _non_space_count(text)
    digits = sum(1 for c in text if c.isdigit())
    return None if total == 0 or digits <= max_ratio * total else f"digit_ratio:>{max_ratio}"


def script_mix(text: str, *, allowed: frozenset[str], min_fraction: float) -> str | None:
    """Drop documents where fewer than `min_fraction` of the letters are in the `allowed` scripts."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    inside = sum(1 for c in letters if script_of(c) in allowed)
    return None if inside >= min_fraction * len(letters) else "script_mix"


def duplicate_lines(text: str, *, max_fraction: float) -> str | None:
    """Drop documents where more than `max_fraction` of the non-empty lines repeat an earlier line."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) < 2:
        return None
    repeated = len(lines) - len(set(lines))
    return None if repeated <= max_fraction * len(lines) else "repetition:duplicate_lines"


def top_ngram_fraction(text: str, n: int) -> float:
    """Fraction of characters covered by the most frequent character n-gram that holds a letter or digit.

    Counts only n-grams seen at least `TOP_NGRAM_MIN_COUNT` times: a word used twice in a short text
    ("名义利率和实际利率") is language, not repetition; runs of punctuation are `symbol_ratio`'s job.
    """
    counts = Counter(text[i : i + n] for i in range(len(text) - n + 1))
    best = max((k for gram, k in counts.items() if k >= TOP_NGRAM_MIN_COUNT and _has_alnum(gram)), default=0)
    return 0.0 if best < TOP_NGRAM_MIN_COUNT else min(1.0, best * n / len(text))


def _has_alnum(gram: str) -> bool:
    return any(c.isalnum() for c in gram)


def top_ngram(text: str, *, n: int, max_fraction: float) -> str | None:
    """Drop documents where the most frequent repeated character n-gram covers more than `max_fraction`."""
    return None if top_ngram_fraction(text, n) <= max_fraction else f"repetition:top_{n}gram"


def duplicate_ngram_fraction(text: str, n: int) -> float:
    """Fraction of characters inside character n-grams that occur at least twice in the text."""
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    if len(grams) < 2:
        return 0.0
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0.0
    covered = bytearray(len(text))
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = b"\x01" * n
    return sum(covered) / len(text)


def duplicate_ngram(text: str, *, n: int, max_fraction: float) -> str | None:
    """Drop documents where more than `max_fraction` of characters lie in repeated character n-grams."""
    return None if duplicate_ngram_fraction(text, n) <= max_fraction else f"repetition:duplicate_{n}gram"


def build_filters(cfg: FilterConfig) -> list[Filter]:
    """The enabled filters of `cfg`, cheapest first (`too_long` before anything that reads the text)."""
    filters: list[Filter] = [empty]
    if cfg.min_chars is not None:
        filters.append(partial(too_short, min_chars=cfg.min_chars))
    if cfg.max_chars is not None:
        filters.append(partial(too_long, max_chars=cfg.max_chars))
    if cfg.max_digit_ratio is not None:
        filters.append(partial(digit_ratio, max_ratio=cfg.max_digit_ratio))
    if cfg.max_symbol_ratio is not None:
        filters.append(partial(symbol_ratio, max_ratio=cfg.max_symbol_ratio))
    if cfg.allowed_scripts is not None:
        allowed = frozenset(cfg.allowed_scripts)
        filters.append(partial(script_mix, allowed=allowed, min_fraction=cfg.min_allowed_script_fraction))
    return filters + _repetition_filters(cfg)


def _repetition_filters(cfg: FilterConfig) -> list[Filter]:
    filters: list[Filter] = []
    if cfg.max_duplicate_line_fraction is not None:
        filters.append(partial(duplicate_lines, max_fraction=cfg.max_duplicate_line_fraction))
    if cfg.max_top_ngram_fraction is not None:
        filters.append(partial(top_ngram, n=cfg.top_ngram_size, max_fraction=cfg.max_top_ngram_fraction))
    if cfg.max_duplicate_ngram_fraction is not None:
        dup = partial(duplicate_ngram, n=cfg.duplicate_ngram_size, max_fraction=cfg.max_duplicate_ngram_fraction)
        filters.append(dup)
    return filters


def drop_reason(text: str, filters: Sequence[Filter]) -> str | None:
    """The first filter's reason to drop `text`, or None to keep it."""
    for check in filters:
        reason = check(text)
        if reason is not None:
            return reason
    return None
