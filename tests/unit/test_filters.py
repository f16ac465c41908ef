"""Behaviour of the noise filters (vaelm.text.filters) and their spec section: each way to pass and to fail."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from vaelm.config.base import describe_validation_error
from vaelm.config.text import SCRIPTS, FilterConfig
from vaelm.text import filters as F
from vaelm.text.filters import build_filters, drop_reason

DEFAULT = build_filters(FilterConfig())

REVIEW_ZH = "质量很好，物流也快，推荐购买！"
NEWS_ZH = (
    "在１９９８年来临之际，我十分高兴地通过中央人民广播电台、中国国际广播电台和中央电视台，"
    "向全国各族人民，向香港特别行政区同胞、澳门和台湾同胞、海外侨胞，向世界各国的朋友们，致以新年的祝贺！"
)
REVIEW_EN = "Sturdy case, fast delivery, would buy again!"
NEWS_EN = (
    "The central bank left interest rates unchanged on Thursday, saying that inflation had eased "
    "for a third month while employment remained strong across most regions of the country."
)
LEGAL_ZH = (
    "人民法院对提起公诉的案件进行审查后，对于起诉书中有明确的指控犯罪事实的，应当决定开庭审判。"
    "对于人民检察院提起公诉的案件，人民法院都应当受理。"
)


@pytest.mark.parametrize(
    "text", [REVIEW_ZH, NEWS_ZH, REVIEW_EN, NEWS_EN, LEGAL_ZH, "名义利率和实际利率", "同胞们、朋友们、女士们"]
)
def test_defaults_keep_ordinary_reviews_and_news(text: str) -> None:
    assert drop_reason(text, DEFAULT) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("  \n ", "empty"),
        ("好评！", "too_short:<5"),
        ("nice", "too_short:<5"),
        ("入住时间：2008.5.14 12:30:45", "digit_ratio:>0.3"),
        ("Call 555-0199 or 555-0123 now", "digit_ratio:>0.3"),
        ("太差了！！！！！！！！！！！！", "symbol_ratio:>0.3"),
        ("Wow!!! $$$ >>> *** ### !!!", "symbol_ratio:>0.3"),
        ("不错不错不错不错不错不错不错不错不错不错", "repetition:top_2gram"),
        ("ha ha ha ha ha ha ha ha ha", "repetition:top_2gram"),
        ("写得很烂，胡言乱语写得很烂，胡言乱语", "repetition:duplicate_7gram"),
        ("buy this now, buy this now, buy this now, buy this now", "repetition:duplicate_7gram"),
        ("this is spam\nthis is spam\nthis is spam\nreal line", "repetition:duplicate_lines"),
        ("物流很快哦\n物流很快哦\n物流很快哦\n质量不错", "repetition:duplicate_lines"),
    ],
)
def test_defaults_drop_junk_with_reason(text: str, reason: str) -> None:
    assert drop_reason(text, DEFAULT) == reason


def test_too_long_checked_first_and_cheap_on_5mb_document() -> None:
    text = ("重复的内容。" * 20 + "\n") * 41_000  # about 5 MB of UTF-8
    assert len(text.encode()) > 5_000_000
    start = time.perf_counter()
    reason = drop_reason(text, DEFAULT)
    assert reason == "too_long:>100000"
    assert time.perf_counter() - start < 0.01


def test_longest_allowed_document_is_filtered_in_well_under_a_second() -> None:
    text = (NEWS_ZH + NEWS_EN + "\n") * (100_000 // (len(NEWS_ZH) + len(NEWS_EN) + 1))
    start = time.perf_counter()
    assert drop_reason(text, DEFAULT) == "repetition:duplicate_lines"
    assert drop_reason(text.replace("\n", " "), DEFAULT) == "repetition:duplicate_7gram"
    assert time.perf_counter() - start < 1.0


def test_min_and_max_chars_boundaries() -> None:
    assert F.too_short("12345", min_chars=5) is None
    assert F.too_short("一二三四", min_chars=5) == "too_short:<5"
    assert F.too_long("abc", max_chars=3) is None
    assert F.too_long("abcd", max_chars=3) == "too_long:>3"


def test_symbol_ratio_counts_punctuation_emoji_and_replacement_char() -> None:
    assert F.symbol_ratio("好好好好好好好😀😀😀", max_ratio=0.3) is None  # exactly 0.3 passes
    assert F.symbol_ratio("好好好好好好😀😀😀😀", max_ratio=0.3) == "symbol_ratio:>0.3"
    assert F.symbol_ratio("乱码\ufffd\ufffd\ufffd", max_ratio=0.3) == "symbol_ratio:>0.3"


def test_digit_ratio_counts_full_width_digits_but_not_chinese_numerals() -> None:
    assert F.digit_ratio("１９９８年１月１日", max_ratio=0.3) == "digit_ratio:>0.3"
    assert F.digit_ratio("一九九八年一月一日", max_ratio=0.3) is None


def test_script_mix() -> None:
    allowed = frozenset({"Han", "Latin"})
    check = F.script_mix
    assert check("我用iPhone看书，很方便", allowed=allowed, min_fraction=0.8) is None
    assert check("Great book, 推荐", allowed=allowed, min_fraction=0.8) is None
    assert check("Отличная книга, рекомендую", allowed=allowed, min_fraction=0.8) == "script_mix"
    assert check("とても良い本です、おすすめ", allowed=allowed, min_fraction=0.8) == "script_mix"
    assert check("12345 ！？", allowed=allowed, min_fraction=0.8) is None  # no letters: nothing to judge


def test_script_of_known_characters() -> None:
    got = [F.script_of(c) for c in "中a\u00e9Жαあア한ｚ\U00020000-"]
    assert got == ["Han", "Latin", "Latin", "Cyrillic", "Greek", "Hiragana", "Katakana", "Hangul", "Latin", "Han", None]


def test_every_script_in_config_has_ranges() -> None:
    assert {name for _, _, name in F._SCRIPT_RANGES} == set(SCRIPTS)


def test_allowed_scripts_from_config_drops_other_scripts() -> None:
    filters = build_filters(FilterConfig(allowed_scripts=["Han", "Latin"]))
    assert drop_reason(REVIEW_ZH, filters) is None
    assert drop_reason("Очень хорошее качество товара", filters) == "script_mix"


def test_top_ngram_ignores_words_used_twice_and_punctuation_runs() -> None:
    assert F.top_ngram_fraction("名义利率和实际利率", 2) == 0.0
    assert F.top_ngram_fraction("十分享受。。。。。。", 2) == 0.0
    assert F.top_ngram_fraction("哈哈哈哈哈", 2) == 1.0


def test_duplicate_ngram_fraction() -> None:
    assert F.duplicate_ngram_fraction("abcdefgh", 5) == 0.0
    assert F.duplicate_ngram_fraction("abcdeXabcde", 5) == 10 / 11
    assert F.duplicate_ngram_fraction("觉得一般觉得一般觉得一般", 7) == 1.0


def test_duplicate_lines_single_line_never_drops() -> None:
    assert F.duplicate_lines("only one line", max_fraction=0.0) is None
    assert F.duplicate_lines("a\nb\na", max_fraction=0.3) == "repetition:duplicate_lines"
    assert F.duplicate_lines("a\nb\na", max_fraction=0.34) is None


def test_every_filter_can_be_turned_off() -> None:
    cfg = FilterConfig(
        min_chars=None,
        max_chars=None,
        max_duplicate_line_fraction=None,
        max_top_ngram_fraction=None,
        max_duplicate_ngram_fraction=None,
        max_symbol_ratio=None,
        max_digit_ratio=None,
    )
    filters = build_filters(cfg)
    assert filters == [F.empty]
    assert drop_reason("！！！", filters) is None
    assert drop_reason(" ", filters) == "empty"


def test_reasons_have_a_short_category_before_the_colon() -> None:
    junk = ["", "ab", "x" * 200_000, "1234567890a", "!!!!!!!a", "好好好好好好好好", "a\na\na\nb"]
    categories = {(drop_reason(t, DEFAULT) or "").split(":")[0] for t in junk}
    assert categories == {"empty", "too_short", "too_long", "digit_ratio", "symbol_ratio", "repetition"}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"max_symbol_ratio": 1.5}, "must be in (0, 1); use null to turn this filter off"),
        ({"min_chars": 0}, "must be at least 1"),
        ({"min_chars": 50, "max_chars": 10}, "min_chars=50 is above max_chars=10"),
        ({"top_ngram_size": 7}, "must be between 2 and 4"),
        ({"allowed_scripts": ["Hanzi"]}, "unknown script(s) ['Hanzi']"),
        ({"min_allowed_script_fraction": 0}, "must be in (0, 1]"),
    ],
)
def test_config_errors_say_rule_and_fix(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        FilterConfig.model_validate(data)
    message = describe_validation_error(info.value, where="jobs/preprocess.yaml filter")
    assert needle in message
