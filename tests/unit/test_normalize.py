"""Behaviour of text decoding and normalisation (vaelm.text.normalize) and its spec section."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vaelm.config.text import NormalizeConfig
from vaelm.text.normalize import decode_text, normalize

NFC = NormalizeConfig()
NFKC = NormalizeConfig(form="NFKC")
RAW = NormalizeConfig(form="none", strip_control=False, strip_zero_width=False, collapse_whitespace=False)


def test_default_nfc_keeps_full_width_chinese_punctuation() -> None:
    assert normalize("质量很好，物流也快，推荐购买！真的吗？", NFC) == "质量很好，物流也快，推荐购买！真的吗？"


def test_nfkc_folds_full_width_punctuation_and_digits() -> None:
    assert normalize("质量很好，推荐！真的吗？１２３", NFKC) == "质量很好,推荐!真的吗?123"


def test_nfc_composes_combining_accents() -> None:
    assert normalize("cafe\u0301 au lait", NFC) == "caf\u00e9 au lait"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("好\u200b评\u200d！", "好评！"),  # zero-width space and joiner
        ("\ufeffhello wor\u00adld", "hello world"),  # BOM and soft hyphen
        ("物流\u2060很快", "物流很快"),  # word joiner
    ],
)
def test_zero_width_characters_are_removed(raw: str, expected: str) -> None:
    assert normalize(raw, NFC) == expected


def test_zero_width_characters_kept_when_turned_off() -> None:
    cfg = NormalizeConfig(strip_zero_width=False)
    assert normalize("好\u200b评", cfg) == "好\u200b评"


def test_control_characters_removed_but_newline_and_tab_kept() -> None:
    cfg = NormalizeConfig(collapse_whitespace=False)
    assert normalize("a\x00b\x07c\x1b[0m\td\ne\x7f\x9f", cfg) == "abc[0m\td\ne"
    assert normalize("书\x00很\x08好", NFC) == "书很好"


def test_line_breaks_unified_to_newline() -> None:
    assert normalize("第一行\r\n第二行\rthird\u2028fourth", NFC) == "第一行\n第二行\nthird\nfourth"


def test_whitespace_collapsed_lines_stripped_one_blank_line_kept() -> None:
    text = "  Hello \t  world  \n\n\n\n\u3000\u3000第二段  内容 \n  "
    assert normalize(text, NFC) == "Hello world\n\n第二段 内容"


def test_whitespace_kept_when_collapse_turned_off() -> None:
    cfg = NormalizeConfig(collapse_whitespace=False)
    assert normalize("  a  b\n\n\n\nc ", cfg) == "  a  b\n\n\n\nc "


def test_form_none_with_everything_off_changes_only_line_breaks() -> None:
    text = "cafe\u0301\u200b\x00 ，  x"
    assert normalize(text + "\r\n", RAW) == text + "\n"


def test_lone_surrogates_become_replacement_characters() -> None:
    text = b"ok \xed\xa0\x80 fine".decode("utf-8", "surrogatepass")
    assert normalize(text, NFC) == "ok \ufffd fine"


def test_decode_valid_utf8() -> None:
    result = decode_text("质量很好 good".encode(), policy="reject")
    assert (result.text, result.reason, result.replaced) == ("质量很好 good", None, False)


def test_decode_invalid_utf8_replaced() -> None:
    raw = "好".encode() + b"\xff\xfe" + "评".encode()
    result = decode_text(raw, policy="replace")
    assert result.text == "好\ufffd\ufffd评"
    assert result.reason is None and result.replaced


def test_decode_invalid_utf8_rejected_with_byte_offset() -> None:
    result = decode_text(b"abc\xc3(", policy="reject")
    assert result.text is None
    assert result.reason == "invalid_utf8:byte_3"
    assert result.reason.split(":")[0] == "invalid_utf8"


def test_decode_truncated_chinese_character_rejected() -> None:
    raw = "物流".encode()[:-1]  # last character cut mid-way
    assert decode_text(raw, policy="reject").reason == "invalid_utf8:byte_3"
    assert decode_text(raw, policy="replace").text == "物\ufffd"


def test_unknown_form_is_a_spec_error() -> None:
    with pytest.raises(ValidationError, match="NFC"):
        NormalizeConfig.model_validate({"form": "NFD"})


def test_unknown_key_is_a_spec_error() -> None:
    with pytest.raises(ValidationError, match="extra"):
        NormalizeConfig.model_validate({"strip_controls": True})


CONFIGS = [NFC, NFKC, NormalizeConfig(form="none"), RAW]


@settings(max_examples=300, deadline=None)
@given(text=st.text(), which=st.integers(0, len(CONFIGS) - 1))
def test_normalize_is_idempotent(text: str, which: int) -> None:
    cfg = CONFIGS[which]
    once = normalize(text, cfg)
    assert normalize(once, cfg) == once


@settings(max_examples=300, deadline=None)
@given(raw=st.binary())
def test_any_bytes_decode_and_normalize_to_valid_utf8(raw: bytes) -> None:
    result = decode_text(raw, policy="replace")
    assert result.text is not None
    out = normalize(result.text, NFC)
    out.encode("utf-8")  # never raises: no surrogates survive
    assert "\r" not in out and out == out.strip()


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zs", "Mn"]) | st.characters()))
def test_normalize_output_is_encodable_and_has_no_controls(text: str) -> None:
    out = normalize(text, NFKC)
    out.encode("utf-8")
    assert all(c in "\n\t" or not (ord(c) < 32 or 0x7F <= ord(c) <= 0x9F) for c in out)
