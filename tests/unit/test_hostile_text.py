"""Hostile text against every pure text function: lone surrogates, controls, zero-width and bidi marks,
combining runs, huge repeats. Properties: nothing raises, results keep their contracts."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from vaelm.config.text import DedupConfig, FilterConfig, NormalizeConfig
from vaelm.text.dedup import MinHasher, exact_key, find_duplicates, id_key
from vaelm.text.filters import build_filters, drop_reason
from vaelm.text.normalize import decode_text, normalize
from vaelm.text.tokenizer import BOS_ID, EOS_ID, UNK_ID, encode_batch, train_tokenizer

pytestmark = pytest.mark.timeout(120)

# characters that break naive text code: controls, zero-width, bidi overrides and isolates, BOM,
# line/paragraph separators, combining marks, a lone surrogate of each half, private use, noncharacters
NASTY = (
    "\x00\x01\x07\x1b\x7f\x85\x9f\t\n\r\x0b\x0c"
    "\u00ad\u034f\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff\u2028\u2029\u3000"
    "\u0301\u0308\u0327\u20dd"
    "\ud800\udbff\udc00\udfff"
    "\ue000\ufffd\ufffe\uffff"
    "\U0010ffff\U0001f600"
    "\u05d0\u05d1\u0627\u0644"  # Hebrew and Arabic (right-to-left)
    "好评，。！"
)
ANY_CHAR = st.characters(codec=None, categories=None)  # every code point, surrogates included
hostile = st.text(alphabet=st.sampled_from(NASTY) | ANY_CHAR, max_size=300)
HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NORMALIZE_CONFIGS = [
    NormalizeConfig(),
    NormalizeConfig(form="NFKC"),
    NormalizeConfig(form="none", strip_control=False, strip_zero_width=False, collapse_whitespace=False),
]
FILTER_SETS = [
    build_filters(FilterConfig()),
    build_filters(FilterConfig(allowed_scripts=["Han", "Latin"], min_chars=1)),
]


@HOSTILE
@given(text=hostile, which=st.integers(0, len(NORMALIZE_CONFIGS) - 1))
def test_normalize_never_raises_is_idempotent_and_writable(text: str, which: int) -> None:
    cfg = NORMALIZE_CONFIGS[which]
    once = normalize(text, cfg)
    assert normalize(once, cfg) == once
    once.encode("utf-8")  # no lone surrogate survives: it could not be written to Parquet


@HOSTILE
@given(raw=st.binary(max_size=300) | hostile.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_decode_never_raises_and_reject_gives_a_reason(raw: bytes) -> None:
    replaced = decode_text(raw, policy="replace")
    assert replaced.text is not None and replaced.reason is None
    rejected = decode_text(raw, policy="reject")
    assert (rejected.text is None) == (rejected.reason is not None)
    if rejected.reason is not None:
        assert rejected.reason.startswith("invalid_utf8:")


@HOSTILE
@given(text=hostile, which=st.integers(0, len(FILTER_SETS) - 1))
def test_drop_reason_is_none_or_a_short_reason(text: str, which: int) -> None:
    for candidate in (text, normalize(text, NormalizeConfig())):
        reason = drop_reason(candidate, FILTER_SETS[which])
        assert reason is None or (isinstance(reason, str) and reason and "\n" not in reason)


@HOSTILE
@given(text=hostile)
def test_dedup_keys_are_stable_uint64_and_exact_key_separates_texts(text: str) -> None:
    key = exact_key(text)
    assert key == exact_key(str(text)) and 0 <= key < 2**64
    assert 0 <= id_key(text) < 2**64
    assert exact_key(text + "x") != key
    hasher = MinHasher.from_config(DedupConfig())
    sig = hasher.signature(text)
    assert (sig == hasher.signature(text)).all()
    assert all(0 <= k < 2**64 for k in hasher.band_keys(sig))


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(hostile, max_size=12))
def test_find_duplicates_never_raises_and_points_at_earlier_documents(texts: list[str]) -> None:
    dups = find_duplicates(texts, DedupConfig())
    for doc, (survivor, kind) in dups.items():
        assert survivor < doc and kind in ("exact", "near")
    for i, t in enumerate(texts):  # an exact copy of an earlier document is always found
        if t in texts[:i]:
            assert i in dups


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(
        ["好评，物流很快。", "The box arrived damaged.", "שלום עולם", "مرحبا"] * 5, vocab_size=300, min_frequency=1
    )


@HOSTILE
@given(
    texts=st.lists(hostile, min_size=1, max_size=8),
    max_tokens=st.integers(3, 40),
    mode=st.sampled_from(["truncate", "split", "reject"]),
)
def test_encode_batch_never_raises_and_respects_max_tokens(
    tok: Tokenizer, texts: list[str], max_tokens: int, mode: str
) -> None:
    encoded = encode_batch(tok, texts, max_tokens=max_tokens, long_documents=mode, min_tokens=3)  # type: ignore[arg-type]
    assert len(encoded) == len(texts)
    for enc in encoded:
        assert (enc.reason is None) == bool(enc.chunks)
        for chunk in enc.chunks:
            assert len(chunk) <= max_tokens and chunk[0] == BOS_ID and chunk[-1] == EOS_ID
            assert UNK_ID not in chunk, "byte-level BPE encodes any text without <unk>"


def test_ten_megabyte_document_is_handled_in_bounded_time(tok: Tokenizer) -> None:
    big = ("好评\u200b\u202e" + "x" * 20 + "\ud800") * (10_000_000 // 25)
    text = normalize(big, NormalizeConfig())
    assert drop_reason(text, FILTER_SETS[0]) == "too_long:>100000"
    [enc] = encode_batch(tok, [text[:200_000]], max_tokens=32, long_documents="truncate")
    assert len(enc.chunks) == 1 and len(enc.chunks[0]) <= 32
