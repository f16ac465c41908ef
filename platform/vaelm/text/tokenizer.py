"""Byte-level BPE tokenizer (Hugging Face `tokenizers`): train, save, load, encode into model-sized chunks.

Ids 0-3 are always <pad> <bos> <eos> <unk>. A sequence the model sees is [<bos>] + ids + [<eos>].
Byte-level BPE has all 256 bytes in its alphabet, so any text encodes without <unk>.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from vaelm.errors import InputError
from vaelm.text.normalize import replace_surrogates

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
_MAX_CUT_BACKTRACK = 8  # tokens a cut may move back to land between two characters

LongDocuments = Literal["truncate", "split", "reject"]
Offsets = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Encoded:
    """One document, tokenized.

    `chunks` holds the sequences to train on, each [BOS] + ids + [EOS] and at most max_tokens long:
    one under "truncate", one or more consecutive pieces under "split", and none when `reason` is set
    ("too_many_tokens:>N" under "reject", "too_few_tokens:<N" when even the whole text is too short).
    `n_tokens` counts the document's tokens before any cut, without <bos>/<eos>.
    """

    chunks: list[list[int]]
    n_tokens: int
    reason: str | None = None


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE tokenizer."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, min_frequency: int) -> Tokenizer:
    """Train byte-level BPE on `texts`; the same texts in the same order give the same tokenizer."""
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok = new_tokenizer()
    tok.train_from_iterator(texts, trainer=trainer)
    check_special_tokens(tok)
    return tok


def tokenizer_to_json(tok: Tokenizer) -> str:
    """The tokenizer as the JSON text of a tokenizer.json file."""
    return tok.to_str()


def tokenizer_from_json(text: str, *, where: str = "tokenizer.json") -> Tokenizer:
    """Load a tokenizer from tokenizer.json text (`where` names it in errors) and check its special tokens."""
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise InputError(
            f"{where} is not a tokenizer file Hugging Face tokenizers can read ({exc}); "
            "give a tokenizer.json saved by tokenizers, or set tokenizer.path to null to train one"
        ) from exc
    check_special_tokens(tok, where=where)
    return tok


def check_special_tokens(tok: Tokenizer, *, where: str = "tokenizer") -> None:
    """Raise InputError unless ids 0-3 are <pad> <bos> <eos> <unk>."""
    found = [tok.id_to_token(i) for i in range(len(SPECIAL_TOKENS))]
    if tuple(found) != SPECIAL_TOKENS:
        expected = ", ".join(f"{i}={t}" for i, t in enumerate(SPECIAL_TOKENS))
        got = ", ".join(f"{i}={t}" for i, t in enumerate(found))
        raise InputError(
            f"{where}: special token ids must be {expected}, found {got}; "
            "train the tokenizer with these special tokens first, or set tokenizer.path to null to train one"
        )


def encode_batch(
    tok: Tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int,
    long_documents: LongDocuments,
    min_tokens: int = 3,
) -> list[Encoded]:
    """Tokenize `texts` (in parallel, in Rust) into model-sized chunks; see `Encoded`.

    Lone surrogates, which `normalize` already removes, are replaced with U+FFFD rather than failing the batch.
    """
    if max_tokens < 3:
        raise ValueError(f"max_tokens={max_tokens}: must be at least 3 (<bos>, one token, <eos>)")
    encodings = tok.encode_batch([replace_surrogates(t) for t in texts], add_special_tokens=False)
    return [
        _encode_one(e.ids, e.offsets, max_tokens=max_tokens, long_documents=long_documents, min_tokens=min_tokens)
        for e in encodings
    ]


def _encode_one(
    ids: list[int], offsets: Offsets, *, max_tokens: int, long_documents: LongDocuments, min_tokens: int
) -> Encoded:
    n = len(ids)
    if n + 2 < min_tokens:
        return Encoded([], n, f"too_few_tokens:<{min_tokens}")
    if n + 2 > max_tokens and long_documents == "reject":
        return Encoded([], n, f"too_many_tokens:>{max_tokens}")
    bounds = _chunk_bounds(offsets, limit=max_tokens - 2, split=long_documents == "split")
    return Encoded([[BOS_ID, *ids[a:b], EOS_ID] for a, b in bounds], n)


def _chunk_bounds(offsets: Offsets, *, limit: int, split: bool) -> list[tuple[int, int]]:
    """[start, end) token ranges of at most `limit` tokens: the first only, or consecutive ones of similar length.

    Each cut moves back (a few tokens at most) to fall between two characters, so that no piece starts
    or ends with half of a multi-byte character. Split adds a piece whenever a moved cut overfills one.
    """
    n = len(offsets)
    if not split or n <= limit:
        return [(0, _clean_cut(offsets, start=0, end=min(n, limit)))]
    pieces = -(-n // limit)
    while True:
        cuts = [0]
        for i in range(1, pieces):
            cuts.append(_clean_cut(offsets, start=cuts[-1], end=i * n // pieces))
        cuts.append(n)
        bounds = list(itertools.pairwise(cuts))
        if all(end - start <= limit for start, end in bounds):
            return bounds
        pieces += 1


def _clean_cut(offsets: Offsets, *, start: int, end: int) -> int:
    """The largest cut in (start, end] that falls between two characters, or `end` if none is near."""
    if end >= len(offsets):
        return end
    for k in range(end, max(start + 1, end - _MAX_CUT_BACKTRACK) - 1, -1):
        if offsets[k][0] >= offsets[k - 1][1]:
            return k
    return end


def decode(tok: Tokenizer, ids: Sequence[int]) -> str:
    """Text of a token id sequence; special tokens (<pad> <bos> <eos> <unk>) are left out."""
    return tok.decode(list(ids), skip_special_tokens=True)
