"""Small corpora for tests: real-looking Chinese and English documents with known duplicates and noise."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ZH = [
    "这家店的服务态度非常好，菜品也很新鲜，下次还会再来。",
    "物流速度太慢了，等了整整一个星期才收到货，包装也破了。",
    "这本书写得很有深度，作者对历史的分析让人耳目一新。",
    "手机电池续航能力一般，充满电只能用大半天，有点失望。",
    "酒店位置很方便，离地铁站只有五分钟路程，房间干净整洁。",
    "质量很好，物流也快，推荐购买！",
    "衣服颜色和图片上的不一样，面料摸起来也很粗糙。",
    "新华社北京一月一日电，国家主席发表新年贺词，回顾过去一年的成就。",
    "今年的粮食产量再创新高，农民收入稳步增长，农村面貌焕然一新。",
    "科学家在实验室里发现了一种新的材料，可以大幅提高电池的储能效率。",
]
EN = [
    "The hotel was clean and the staff were friendly, but breakfast was disappointing.",
    "Shipping took two weeks and the box arrived damaged; the product itself works fine.",
    "A thoughtful book about the history of printing, with many surprising details.",
    "The battery barely lasts half a day, which is far worse than the advertised figure.",
    "Great value for the price, would definitely recommend it to a friend.",
]


@dataclass
class Corpus:
    paths: list[Path]
    ids: list[str]
    texts: list[str]


ZH_CHARS = "".join(ZH).replace("，", "").replace("。", "").replace("！", "")
EN_WORDS = " ".join(EN).replace(",", "").replace(".", "").replace(";", "").split()


def make_docs(n: int, *, seed: int = 0) -> list[str]:
    """n distinct documents (two of three Chinese): random runs of real characters or words, so that
    no two are near duplicates by chance."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        if i % 3:
            body = "".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(25, 60)))
            docs.append(f"{body[:12]}，{body[12:]}。")
        else:
            words = [rng.choice(EN_WORDS) for _ in range(rng.randint(10, 25))]
            docs.append(" ".join(words).capitalize() + ".")
    return docs


def write_corpus(
    folder: Path, texts: list[str], *, files: int = 2, ids: list[str] | None = None, row_group_size: int = 50
) -> Corpus:
    folder.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"doc-{i:05d}" for i in range(len(texts))]
    per = -(-len(texts) // files)
    paths = []
    for f in range(files):
        chunk = slice(f * per, (f + 1) * per)
        path = folder / f"part-{f}.parquet"
        pq.write_table(pa.table({"id": ids[chunk], "text": texts[chunk]}), path, row_group_size=row_group_size)
        paths.append(path)
    return Corpus(paths, ids, texts)


def near_copy(text: str) -> str:
    """The same document with one character changed near the end (a near duplicate)."""
    pos = len(text) - 3
    return text[:pos] + ("X" if text[pos] != "X" else "Y") + text[pos + 1 :]
