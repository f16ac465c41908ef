"""The per-unit steps of the bulk jobs, each run inside a Ray actor (see batch.py).

A step loads the model once (in __init__), and for each unit reads its rows, rejects the unusable ones
with a reason, runs the model over length-sorted batches, and writes data/<unit>.parquet and
rejects/<unit>.parquet at deterministic names. The driver commits the unit after the step returns.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from vaelm import storage
from vaelm.config.batch import ClassifySpec, EmbedSpec, GenerateSpec, InputBatchSpec, ScoreSpec
from vaelm.config.loader import identity_hash
from vaelm.errors import InputError
from vaelm.model import infer
from vaelm.pipeline.batch_io import (
    check_rows,
    float_lists,
    load_model,
    output_table,
    passthrough_of,
    read_artifact_files,
)
from vaelm.pipeline.preprocess_steps import Rejects
from vaelm.pipeline.units import Unit, read_unit
from vaelm.text.tokenizer import tokenizer_from_json

SPECS: dict[str, type[InputBatchSpec] | type[GenerateSpec]] = {
    "classify": ClassifySpec,
    "embed": EmbedSpec,
    "score": ScoreSpec,
    "generate": GenerateSpec,
}


def pick_device(num_gpus: float) -> torch.device:
    return torch.device("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")


def precision_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on `device` for run.precision bf16; nothing (fp32) otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class ModelStep:
    """Loads the artifact once per actor; subclasses compute one unit's output columns."""

    def __init__(self, spec_data: dict[str, Any], model_id: str) -> None:
        self.spec: Any = SPECS[spec_data["job"]].model_validate(spec_data)
        threads = max(1, round(self.spec.ray.actor_cpus))
        torch.set_num_threads(threads)  # the actor's CPUs, whatever OMP_NUM_THREADS says
        os.environ["RAYON_NUM_THREADS"] = str(threads)  # the tokenizer's pool too (read at its first use)
        self.art = load_model(read_artifact_files(self.spec.model, self.spec.storage), uri=self.spec.model)
        if self.art.model_id != model_id:  # read again here, not shipped through the object store (see batch.py)
            raise InputError(
                f"model artifact {self.spec.model} changed while the job ran (the job started with model "
                f"{model_id}, this worker read {self.art.model_id}); leave the artifact alone and rerun"
            )
        self.device = pick_device(self.spec.ray.num_gpus_per_actor)
        self.model = self.art.model.to(self.device).eval()
        self.tok = tokenizer_from_json(self.art.tokenizer_json)
        self.root = storage.open_location(self.spec.output, self.spec.storage)
        limit = self.spec.run.max_tokens or self.art.config.max_tokens
        self.max_tokens = min(limit, self.art.config.max_tokens)
        self.provenance = {"model_id": self.art.model_id, "job_id": identity_hash(self.spec)}

    def precision(self) -> contextlib.AbstractContextManager[Any]:
        """The context the model runs in: bf16 autocast when run.precision is bf16."""
        return precision_context(self.device, self.spec.run.precision)

    def write(self, unit: Unit, table: pa.Table, rejects: Rejects) -> None:
        storage.write_table(self.root.join("data", f"{unit.name}.parquet"), table)
        storage.write_table(self.root.join("rejects", f"{unit.name}.parquet"), rejects.table())

    def batches(self, rows: list[list[int]]) -> list[tuple[list[int], Tensor, Tensor]]:
        """(row indices, tokens, lengths) per batch, sorted by length, on the model's device."""
        out = []
        for idx in infer.length_batches([len(r) for r in rows], self.spec.run.batch_size):
            tokens, lengths = infer.pad_rows([rows[i] for i in idx])
            out.append((idx, tokens.to(self.device), lengths))
        return out


class InputStep(ModelStep):
    """A step over input documents: one output row per usable input row."""

    def __call__(self, unit: Unit) -> dict[str, Any]:
        started = time.time()
        table = read_unit(unit, self.spec.input, self.spec.storage)
        rejects = Rejects(self.spec.job, self.spec.run.excerpt_chars)
        keep, texts = check_rows(table, unit, self.spec.run, rejects)
        docs = infer.encode_docs(self.tok, texts, max_tokens=self.max_tokens)
        ids = [table.column("id")[i].as_py() for i in keep]
        columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
        columns.update(self.compute(docs, ids))
        columns["truncated"] = pa.array(docs.truncated, pa.bool_())
        columns["n_tokens"] = pa.array(docs.n_tokens, pa.int32())
        passthrough = passthrough_of(table, keep, self.spec.input.passthrough_columns)
        out = output_table(columns, passthrough=passthrough, provenance=self.provenance)
        self.write(unit, out, rejects)
        stats = _stats(table.num_rows, len(keep), out.num_rows, rejects, sum(docs.truncated))
        return {**stats, "started": started, "finished": time.time(), "torch_threads": torch.get_num_threads()}

    def compute(self, docs: infer.Docs, ids: list[str]) -> dict[str, pa.Array]:
        raise NotImplementedError

    def run_batches(self, docs: infer.Docs, fn: Any) -> dict[str, np.ndarray]:
        """Apply fn(idx, tokens, lengths) -> {name: (b, ...) tensor} per batch; results in row order."""
        out: dict[str, np.ndarray] = {}
        for idx, tokens, lengths in self.batches(docs.rows):
            with self.precision():
                values = fn(idx, tokens, lengths)
            for name, value in values.items():
                arr = value.detach().float().cpu().numpy()
                if name not in out:
                    out[name] = np.zeros((len(docs.rows), *arr.shape[1:]), dtype=np.float32)
                out[name][idx] = arr
        return out


def _stats(rows_in: int, docs_out: int, rows_out: int, rejects: Rejects, truncated: int) -> dict[str, Any]:
    return {
        "rows_in": rows_in,
        "docs_out": docs_out,
        "rows_out": rows_out,
        "rejected": rejects.counts(),
        "truncated": int(truncated),
    }


class EmbedStep(InputStep):
    def compute(self, docs: infer.Docs, ids: list[str]) -> dict[str, pa.Array]:
        def fn(idx: list[int], tokens: Tensor, lengths: Tensor) -> dict[str, Tensor]:
            mu, sigma = infer.embed(self.model, tokens, lengths)
            return {"mu": mu, "sigma": sigma}

        got = self.run_batches(docs, fn)
        width = self.art.config.latent_dim
        empty = np.zeros((0, width), np.float32)
        cols = {"embedding": float_lists(got.get("mu", empty), width)}
        if self.spec.embed.include_sigma:
            cols["sigma"] = float_lists(got.get("sigma", empty), width)
        return cols


class ScoreStep(InputStep):
    def compute(self, docs: infer.Docs, ids: list[str]) -> dict[str, pa.Array]:
        cfg = self.spec.score
        seeds = [infer.row_seed(cfg.seed, i) for i in ids]

        def fn(idx: list[int], tokens: Tensor, lengths: Tensor) -> dict[str, Tensor]:
            s = infer.score(self.model, tokens, lengths, seeds=[seeds[i] for i in idx], iw_samples=cfg.iw_samples)
            values = {
                "elbo_nll": s.elbo_nll,
                "nll_per_token": s.nll_per_token,
                "rec_nll": s.rec_nll,
                "kl": s.kl,
                "target_tokens": s.target_tokens,
            }
            return {**values, "iw_nll": s.iw_nll} if s.iw_nll is not None else values

        got = self.run_batches(docs, fn)
        names = ["elbo_nll", "nll_per_token", "rec_nll", "kl", *(["iw_nll"] if cfg.iw_samples else [])]
        cols = {n: pa.array(got.get(n, np.zeros(0, np.float32)), pa.float32()) for n in names}
        cols["target_tokens"] = pa.array(got.get("target_tokens", np.zeros(0)).astype(np.int32), pa.int32())
        return cols


class ClassifyStep(InputStep):
    def compute(self, docs: infer.Docs, ids: list[str]) -> dict[str, pa.Array]:
        classifier = self.art.classifier
        assert classifier is not None and self.art.labels is not None  # checked by the driver
        classifier.to(self.device)

        def fn(idx: list[int], tokens: Tensor, lengths: Tensor) -> dict[str, Tensor]:
            return {"p": infer.classify(classifier, tokens, lengths)}

        n_labels = len(self.art.labels)
        probs = self.run_batches(docs, fn).get("p", np.zeros((0, n_labels), np.float32))
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
        cols = {
            "label": pa.array([self.art.labels[i] for i in best], pa.string()),
            "label_index": pa.array(best.astype(np.int32), pa.int32()),
            "confidence": pa.array(probs.max(axis=1) if len(probs) else [], pa.float32()),
        }
        if self.spec.classify.probabilities:
            cols["probabilities"] = float_lists(probs, n_labels)
        return cols
