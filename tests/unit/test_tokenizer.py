"""Behaviour of the byte-level BPE tokenizer (vaelm.text.tokenizer) and its spec sections."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenizers import Tokenizer

from vaelm.config.text import TokenizeConfig, TokenizerConfig
from vaelm.errors import InputError
from vaelm.text.normalize import replace_surrogates
from vaelm.text.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    check_special_tokens,
    decode,
    encode_batch,
    tokenizer_from_json,
    tokenizer_to_json,
    train_tokenizer,
)

CORPUS = [
    "质量很好，物流也快，推荐购买！",
    "房间很干净，服务员态度也很好，下次还会再来。",
    "这本书内容太浅了，不值这个价钱，很失望。",
    "屏幕清晰，电池续航时间长，性价比很高。",
    "在１９９８年来临之际，我十分高兴地通过中央人民广播电台向全国各族人民致以新年的祝贺！",
    "Sturdy case, fast delivery, would buy again!",
    "The plot was thin and the ending made no sense at all.",
    "Battery life is great but the screen scratches easily.",
] * 8
LONG_ZH = "中国的改革开放和现代化建设继续向前迈进，国民经济保持了良好的发展态势。" * 6


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(CORPUS, vocab_size=400, min_frequency=2)


def test_special_tokens_have_fixed_ids(tok: Tokenizer) -> None:
    assert SPECIAL_TOKENS == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD_ID, BOS_ID, EOS_ID, UNK_ID] == [0, 1, 2, 3]
    assert tok.get_vocab_size() == 400


def test_training_is_deterministic() -> None:
    one = train_tokenizer(CORPUS, vocab_size=400, min_frequency=2)
    two = train_tokenizer(iter(CORPUS), vocab_size=400, min_frequency=2)
    assert tokenizer_to_json(one) == tokenizer_to_json(two)


@pytest.mark.parametrize(
    "text", ["质量很好，物流也快，推荐购买！", "没见过的字：龘靐齉。", "Emoji 🙂 and café", "mixed 中文 English 123"]
)
def test_round_trip_including_unseen_characters(tok: Tokenizer, text: str) -> None:
    (enc,) = encode_batch(tok, [text], max_tokens=128, long_documents="truncate")
    (chunk,) = enc.chunks
    assert chunk[0] == BOS_ID and chunk[-1] == EOS_ID
    assert UNK_ID not in chunk
    assert decode(tok, chunk) == text


def test_training_learns_chinese_merges(tok: Tokenizer) -> None:
    text = "质量很好，物流也快"
    (enc,) = encode_batch(tok, [text], max_tokens=128, long_documents="truncate")
    assert enc.n_tokens < len(text.encode())  # fewer tokens than UTF-8 bytes


def test_json_round_trip(tok: Tokenizer) -> None:
    again = tokenizer_from_json(tokenizer_to_json(tok))
    text = "房间很干净 and clean"
    assert again.encode(text).ids == tok.encode(text).ids


def test_tokenizer_with_wrong_special_ids_is_rejected() -> None:
    data = json.loads(tokenizer_to_json(train_tokenizer(CORPUS, vocab_size=300, min_frequency=2)))
    for added in data["added_tokens"]:
        if added["content"] == "<bos>":
            added["content"] = "<s>"
    data["model"]["vocab"]["<s>"] = data["model"]["vocab"].pop("<bos>")
    with pytest.raises(InputError, match=r"found 0=<pad>, 1=<s>, 2=<eos>, 3=<unk>; train the tokenizer"):
        tokenizer_from_json(json.dumps(data), where="s3://b/tok/tokenizer.json")


def test_unreadable_tokenizer_json_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"s3://b/tok.json is not a tokenizer file .* set tokenizer.path"):
        tokenizer_from_json("{not json", where="s3://b/tok.json")


def test_check_special_tokens_accepts_trained(tok: Tokenizer) -> None:
    check_special_tokens(tok)


def test_truncate_keeps_one_chunk_of_max_tokens(tok: Tokenizer) -> None:
    (enc,) = encode_batch(tok, [LONG_ZH], max_tokens=16, long_documents="truncate")
    (chunk,) = enc.chunks
    assert enc.n_tokens > 14 and enc.reason is None
    assert 12 <= len(chunk) <= 16  # a cut may move back a few tokens to fall between characters
    assert LONG_ZH.startswith(decode(tok, chunk))


def test_split_gives_consecutive_chunks_that_rebuild_the_text(tok: Tokenizer) -> None:
    for text in (LONG_ZH, " ".join(CORPUS[5:8] * 4)):
        (enc,) = encode_batch(tok, [text], max_tokens=16, long_documents="split")
        assert len(enc.chunks) >= enc.n_tokens // 14
        assert all(c[0] == BOS_ID and c[-1] == EOS_ID and 3 <= len(c) <= 16 for c in enc.chunks)
        assert "".join(decode(tok, c) for c in enc.chunks) == text
        assert all("\ufffd" not in decode(tok, c) for c in enc.chunks)  # no character cut in half


def test_split_chunks_have_similar_lengths(tok: Tokenizer) -> None:
    (enc,) = encode_batch(tok, [LONG_ZH], max_tokens=32, long_documents="split")
    lengths = [len(c) for c in enc.chunks]
    assert max(lengths) - min(lengths) <= 6


def test_reject_long_documents_with_reason(tok: Tokenizer) -> None:
    short, long = encode_batch(tok, ["质量很好", LONG_ZH], max_tokens=16, long_documents="reject")
    assert short.reason is None and len(short.chunks) == 1
    assert long.reason == "too_many_tokens:>16" and long.chunks == []


def test_too_few_tokens_rejected(tok: Tokenizer) -> None:
    empty, one = encode_batch(tok, ["", "好"], max_tokens=16, long_documents="truncate", min_tokens=3)
    assert empty.reason == "too_few_tokens:<3" and empty.chunks == []
    assert one.reason is None and len(one.chunks[0]) >= 3
    (kept,) = encode_batch(tok, [""], max_tokens=16, long_documents="truncate", min_tokens=2)
    assert kept.chunks == [[BOS_ID, EOS_ID]]


def test_decode_skips_special_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("好评").ids
    assert decode(tok, [BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == "好评"


def test_batch_keeps_order(tok: Tokenizer) -> None:
    encoded = encode_batch(tok, CORPUS[:8], max_tokens=128, long_documents="truncate")
    assert [decode(tok, e.chunks[0]) for e in encoded] == CORPUS[:8]


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        (TokenizeConfig, {"val_fraction": 1.0}, r"must be in \[0, 1\)"),
        (TokenizeConfig, {"max_tokens": 2}, "must be between 3 and"),
        (TokenizeConfig, {"min_tokens": 200}, "min_tokens=200 is above max_tokens=128"),
        (TokenizeConfig, {"long_documents": "drop"}, "truncate"),
        (TokenizerConfig, {"vocab_size": 100}, "must be between 300 and"),
    ],
)
def test_config_errors_say_rule_and_fix(model: type, data: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        model.model_validate(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.sampled_from(sorted(set("".join(CORPUS)))) | st.characters(), max_size=200))
def test_split_always_rebuilds_text_within_limit(tok: Tokenizer, text: str) -> None:
    (enc,) = encode_batch(tok, [text], max_tokens=8, long_documents="split", min_tokens=2)
    assert all(len(c) <= 8 for c in enc.chunks)
    assert [i for c in enc.chunks for i in c[1:-1]] == tok.encode(replace_surrogates(text)).ids


def test_lone_surrogate_does_not_fail_the_batch(tok: Tokenizer) -> None:
    bad = "好\ud800评"
    encoded = encode_batch(tok, ["质量很好", bad], max_tokens=32, long_documents="truncate")
    assert decode(tok, encoded[1].chunks[0]) == "好\ufffd评"
