"""Behaviour of exact and near-duplicate detection (vaelm.text.dedup) and its spec section."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from vaelm.config.text import DedupConfig
from vaelm.text.dedup import (
    MinHasher,
    UnionFind,
    exact_key,
    find_duplicates,
    id_key,
    lsh_params,
    shingle_hashes,
)

CFG = DedupConfig()
ZH = (  # People's Daily, 1 January 1998
    "同胞们、朋友们、女士们、先生们：在１９９８年来临之际，我十分高兴地通过中央人民广播电台、中国国际广播电台和中央电视台，"
    "向全国各族人民，向香港特别行政区同胞、澳门和台湾同胞、海外侨胞，向世界各国的朋友们，致以诚挚的问候和良好的祝愿！"
    "１９９７年，是中国发展历史上非常重要的很不平凡的一年。中国人民决心继承邓小平同志的遗志，继续把建设有中国特色社会主义"
    "事业推向前进。中国政府顺利恢复对香港行使主权，并按照“一国两制”、“港人治港”、高度自治的方针保持香港的繁荣稳定。"
    "中国共产党成功地召开了第十五次全国代表大会，高举邓小平理论伟大旗帜，总结百年历史，展望新的世纪，制定了中国跨世纪发展的"
    "行动纲领。在这一年中，中国的改革开放和现代化建设继续向前迈进。国民经济保持了“高增长、低通胀”的良好发展态势。"
)
EN = (
    "The central bank left interest rates unchanged on Thursday, saying that inflation had eased for a third "
    "month while employment remained strong across most regions. Analysts had expected the decision, and "
    "markets barely moved after the announcement, though bond yields fell slightly in the afternoon session."
)
DISTINCT = [
    "质量很好，物流也快，推荐购买！",
    "房间很干净，服务员态度也很好，下次还会再来。",
    "这本书内容太浅了，不值这个价钱，很失望。",
    "屏幕清晰，电池续航时间长，性价比很高。",
    "Sturdy case, fast delivery, would buy again!",
    "The plot was thin and the ending made no sense at all.",
    "Battery life is great but the screen scratches easily.",
]


def _jaccard(a: str, b: str, k: int = 5) -> float:
    sa = {a[i : i + k] for i in range(len(a) - k + 1)}
    sb = {b[i : i + k] for i in range(len(b) - k + 1)}
    return len(sa & sb) / len(sa | sb)


def _change_char(text: str, pos: int) -> str:
    return text[:pos] + ("很" if text[pos] != "很" else "好") + text[pos + 1 :]


def test_exact_key_is_a_stable_uint64() -> None:
    assert exact_key("质量很好") == 10866529669725301431  # pinned: keys must match across processes and runs
    assert 0 <= exact_key(EN) < 2**64
    assert exact_key("质量很好") != exact_key("质量很好！")


def test_id_key_lives_in_a_different_keyspace() -> None:
    assert id_key("质量很好") == 7382235649639092138
    assert id_key("doc-1") != exact_key("doc-1")


def test_band_keys_stable_across_minhasher_instances() -> None:
    a, b = MinHasher.from_config(CFG), MinHasher.from_config(CFG)
    text = "质量很好，物流也快，推荐购买！"
    keys = a.band_keys(a.signature(text))
    assert keys == b.band_keys(b.signature(text))
    assert keys[:2] == [15832228579399610100, 16515264211675158853]  # pinned across processes
    assert len(keys) == 9 and all(0 <= k < 2**64 for k in keys)


def test_equal_rows_in_different_bands_give_different_keys() -> None:
    hasher = MinHasher(num_perm=8, shingle_size=5, seed=1, bands=4, rows=2)
    keys = hasher.band_keys(np.zeros(8, dtype=np.uint64))
    assert len(set(keys)) == 4


def test_seed_changes_signature() -> None:
    one = MinHasher(num_perm=16, shingle_size=5, seed=1, bands=4, rows=4).signature(EN)
    two = MinHasher(num_perm=16, shingle_size=5, seed=2, bands=4, rows=4).signature(EN)
    assert not np.array_equal(one, two)


def test_short_and_empty_texts_are_one_shingle() -> None:
    assert len(shingle_hashes("好评", 5)) == 1
    assert len(shingle_hashes("", 5)) == 1
    assert shingle_hashes("ab", 5)[0] != shingle_hashes("\x00ab", 5)[0]
    assert len(shingle_hashes("abcdefabcdef", 5)) == 6  # distinct shingles only: a set


def test_signature_of_long_text_equals_unblocked_minimum() -> None:
    hasher = MinHasher.from_config(CFG)
    points = np.random.default_rng(0).integers(0x4E00, 0x9FFF, size=40_000)
    text = "".join(map(chr, points))  # more distinct shingles than one block
    shingles = shingle_hashes(text, 5)
    assert len(shingles) > 16_384
    with np.errstate(over="ignore"):
        expected = (hasher._a * shingles[None, :] + hasher._b).min(axis=1)
    assert np.array_equal(hasher.signature(text), expected)


def test_signature_estimates_jaccard() -> None:
    hasher = MinHasher.from_config(CFG)
    errors = []
    for start in range(0, 200, 10):
        a, b = ZH[start : start + 80], ZH[start + 8 : start + 88]
        estimate = float(np.mean(hasher.signature(a) == hasher.signature(b)))
        errors.append(abs(estimate - _jaccard(a, b)))
    assert np.mean(errors) < 0.04 and max(errors) < 0.15


def test_exact_duplicates_survivor_is_lowest_index() -> None:
    texts = ["好评！物流很快", "Great product, thanks", "好评！物流很快", "差评", "好评！物流很快", "差评"]
    assert find_duplicates(texts, CFG) == {2: (0, "exact"), 4: (0, "exact"), 5: (3, "exact")}


def test_exact_only_keeps_near_duplicates() -> None:
    cfg = DedupConfig(near=False)
    texts = [ZH[:120], _change_char(ZH[:120], 60), ZH[:120]]
    assert find_duplicates(texts, cfg) == {2: (0, "exact")}


def test_near_duplicate_one_character_changed_in_chinese_60_chars() -> None:
    original = ZH[:60]
    changed = _change_char(original, 56)  # 4 shingles differ: Jaccard 0.86
    assert _jaccard(original, changed) > 0.85
    assert find_duplicates([*DISTINCT, original, changed], CFG) == {8: (7, "near")}


def test_near_duplicate_one_word_changed_in_english_60_chars() -> None:
    original = EN[:60]
    changed = original.replace("The central", "Our central")  # 3 shingles differ: Jaccard 0.9
    assert _jaccard(original, changed) > 0.88
    assert find_duplicates([changed, *DISTINCT, original], CFG) == {8: (0, "near")}


@pytest.mark.parametrize("text", [ZH, EN])
def test_one_changed_character_is_found_in_most_120_char_windows(text: str) -> None:
    found = 0
    for start in range(0, 160, 8):
        window = text[start : start + 120]
        found += find_duplicates([window, _change_char(window, 60)], CFG) == {1: (0, "near")}
    assert found >= 18  # Jaccard about 0.92: LSH (9 bands x 13 rows) finds it with probability about 0.97


def test_distinct_texts_are_all_kept() -> None:
    texts = DISTINCT + [ZH[i : i + 60] for i in range(0, 240, 60)] + [EN[i : i + 60] for i in range(0, 240, 60)]
    assert find_duplicates(texts, CFG) == {}


def test_dissimilar_pairs_rarely_collide() -> None:
    collisions = 0
    for start in range(0, 150, 10):
        a, b = ZH[start : start + 100], ZH[start + 50 : start + 150]  # Jaccard about 0.3
        collisions += bool(find_duplicates([a, b], DedupConfig(exact=False)))
    assert collisions == 0


def test_groups_are_transitive_and_mark_exact_against_survivor() -> None:
    base = ZH[:120]
    near = _change_char(base, 118)
    texts = [near, "无关的评论，完全不同的内容。", base, near]
    assert find_duplicates(texts, CFG) == {2: (0, "near"), 3: (0, "exact")}


def test_dedup_off_removes_nothing() -> None:
    assert find_duplicates(["同一个文本", "同一个文本"], DedupConfig(exact=False, near=False)) == {}


def test_explicit_bands_and_rows_are_used() -> None:
    hasher = MinHasher.from_config(DedupConfig(num_perm=64, bands=16, rows=4))
    assert (hasher.bands, hasher.rows) == (16, 4)
    assert len(hasher.band_keys(hasher.signature(EN))) == 16


def test_lsh_params_use_at_most_num_perm() -> None:
    for threshold in (0.5, 0.8, 0.9):
        bands, rows = lsh_params(threshold, 128)
        assert bands * rows <= 128
    assert lsh_params(0.8, 128) == (9, 13)


@pytest.mark.parametrize("threshold", [0.7, 0.9])
def test_lsh_params_match_datasketch(threshold: float) -> None:
    lsh = pytest.importorskip("datasketch.lsh")
    assert lsh_params(threshold, 128) == lsh._optimal_param(threshold, 128, 0.5, 0.5)


def test_minhasher_rejects_more_bands_than_permutations() -> None:
    with pytest.raises(ValueError, match="exceeds num_perm=16"):
        MinHasher(num_perm=16, shingle_size=5, seed=1, bands=5, rows=4)


def test_union_find_smallest_root_wins() -> None:
    uf = UnionFind()
    uf.union(7, 3)
    uf.union(9, 7)
    uf.union(12, 11)
    assert [uf.find(x) for x in (3, 7, 9, 11, 12, 5)] == [3, 3, 3, 11, 11, 5]
    assert uf.union(12, 9) == 3
    assert uf.find(11) == 3


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"near_threshold": 0}, "must be in (0, 1]; 0.8 is a common choice"),
        ({"bands": 8}, "give both or neither"),
        ({"bands": 16, "rows": 16}, "bands x rows = 256 exceeds num_perm=128"),
        ({"shingle_size": 0}, "must be between 1 and 32"),
        ({"num_shards": 0}, "must be at least 1"),
    ],
)
def test_config_errors_say_rule_and_fix(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle.replace("(", r"\(").replace("]", r"\]")):
        DedupConfig.model_validate(data)
