"""LatentClassifier on the VAE encoder: frozen vs fine-tuned, learning, artifact round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.unit.vae_testlib import (
    DISTINCT_DOCS,
    batch,
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_model,
)
from vaelm.model.artifact import artifact_files, load_artifact
from vaelm.model.classifier import LatentClassifier

LABELS = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])


def _train(clf: LatentClassifier, steps: int = 60) -> float:
    tokens, lengths = batch(DISTINCT_DOCS)
    opt = torch.optim.Adam([p for p in clf.parameters() if p.requires_grad], lr=3e-2)
    clf.train()
    for _ in range(steps):
        loss = F.cross_entropy(clf(tokens, lengths), LABELS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float((clf.predict_proba(tokens, lengths).argmax(dim=1) == LABELS).float().mean())


def test_vae_classifier_frozen_encoder_gets_no_gradient() -> None:
    vae = tiny_model()
    clf = LatentClassifier.from_vae(vae, num_labels=2, hidden_dim=8, freeze_encoder=True)
    before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    _train(clf, steps=5)
    after = clf.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert not clf.encoder.training


def test_vae_classifier_fine_tuning_learns_and_leaves_the_vae_alone() -> None:
    vae = tiny_model(dropout=0.0)
    original = {k: v.clone() for k, v in vae.state_dict().items()}
    clf = LatentClassifier.from_vae(vae, num_labels=2, hidden_dim=16, dropout=0.0, freeze_encoder=False)
    assert _train(clf) == 1.0
    assert all(torch.equal(original[k], v) for k, v in vae.state_dict().items())


@pytest.mark.parametrize("freeze", [True, False])
def test_vae_classifier_artifact_round_trip(freeze: bool) -> None:
    vae = tiny_model()
    clf = LatentClassifier.from_vae(vae, num_labels=2, freeze_encoder=freeze)
    _train(clf, steps=3)
    files = artifact_files(
        model=vae,
        model_config=vae.cfg,
        tokenizer_json="{}",
        metrics={},
        provenance={},
        classifier=clf,
        labels=["neg", "pos"],
    )
    loaded = load_artifact(files)
    assert loaded.classifier is not None and loaded.labels == ["neg", "pos"]
    tokens, lengths = batch(DISTINCT_DOCS)
    assert torch.equal(loaded.classifier.predict_proba(tokens, lengths), clf.predict_proba(tokens, lengths))
    del files["labels.json"]
    with pytest.raises(Exception, match=r"labels\.json is missing"):
        load_artifact(files)


def test_vae_classifier_needs_an_encoder() -> None:
    with pytest.raises(ValueError, match="lm mode"):
        LatentClassifier.from_vae(tiny_model(mode="lm"), num_labels=2)
