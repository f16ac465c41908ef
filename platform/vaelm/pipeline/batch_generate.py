"""The per-unit step of `vaelm generate`: prior samples, reconstructions, interpolations.

Prior units are ranges of sample indices (no input); the others are units of input rows. Every output
row's randomness comes from (generate.seed, its key): the sample index, or the input id.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch
from torch import Tensor

from vaelm.model import infer
from vaelm.model.decode import interpolate
from vaelm.model.generation import DecodeParams, decode_latents, posterior_latents, prior_latents
from vaelm.pipeline.batch_io import check_rows, output_table, passthrough_of
from vaelm.pipeline.batch_steps import ModelStep, _stats
from vaelm.pipeline.preprocess_steps import Rejects
from vaelm.pipeline.units import Unit, read_unit
from vaelm.text.tokenizer import decode


def prior_units(num_samples: int, per_unit: int) -> list[Unit]:
    """Units of sample indices [first_row, first_row + rows): stable for a given spec."""
    starts = range(0, num_samples, per_unit)
    return [Unit(k, "", "prior", (), s, min(per_unit, num_samples - s), False) for k, s in enumerate(starts)]


class GenerateStep(ModelStep):
    def __init__(self, spec_data: dict[str, Any], files: dict[str, bytes]) -> None:
        super().__init__(spec_data, files)
        g = self.spec.generate
        self.cfg = g
        self.params = DecodeParams(
            strategy=g.strategy,
            temperature=g.temperature,
            top_k=g.top_k,
            top_p=g.top_p,
            beam_width=g.beam_width,
            length_penalty=g.length_penalty,
            max_len=g.max_len,
        )

    def __call__(self, unit: Unit) -> dict[str, Any]:
        if self.cfg.mode == "prior":
            return self._prior(unit)
        table = read_unit(unit, self.spec.input, self.spec.storage)
        rejects = Rejects("generate", self.spec.run.excerpt_chars)
        keep, texts = check_rows(table, unit, self.spec.run, rejects)
        if self.cfg.mode == "interpolate" and len(keep) % 2:
            last = keep.pop()
            texts.pop()
            doc_id = table.column("id")[last].as_py()
            rejects.add(doc_id=doc_id, source=unit.source, row=unit.first_row + last, reason="unpaired", text="")
        docs = infer.encode_docs(self.tok, texts, max_tokens=self.max_tokens)
        ids = [table.column("id")[i].as_py() for i in keep]
        z = self._encode(docs, ids)  # (N, Z)
        if self.cfg.mode == "reconstruct":
            out = self._reconstruct(table, keep, ids, docs, z)
        else:
            out = self._interpolate(ids, docs, z)
        self.write(unit, out, rejects)
        return _stats(table.num_rows, len(keep), out.num_rows, rejects, sum(docs.truncated))

    # -- modes ---------------------------------------------------------------------------------------

    def _prior(self, unit: Unit) -> dict[str, Any]:
        index = list(range(unit.first_row, unit.first_row + unit.rows))
        seeds = [infer.row_seed(self.cfg.seed, f"prior:{i}") for i in index]
        texts = self._decode_all(lambda rows: prior_latents(self.model, [seeds[i] for i in rows]), seeds)
        columns = {
            "id": pa.array([f"sample-{i:08d}" for i in index], pa.string()),
            "sample_index": pa.array(index, pa.int64()),
            "row_seed": pa.array(seeds, pa.int64()),
            **self._text_columns(texts),
        }
        out = output_table(columns, passthrough=None, provenance=self.provenance)
        self.write(unit, out, Rejects("generate", 0))
        return {"rows_in": unit.rows, "docs_out": unit.rows, "rows_out": out.num_rows, "rejected": {}, "truncated": 0}

    def _encode(self, docs: infer.Docs, ids: list[str]) -> Tensor:
        seeds = [infer.row_seed(self.cfg.seed, i) for i in ids]
        z = torch.zeros((len(ids), self.model.z_dim), device=self.device)
        for idx, tokens, lengths in self.batches(docs.rows):
            sel = [seeds[i] for i in idx]
            z[idx] = posterior_latents(self.model, tokens, lengths, seeds=sel, sample=self.cfg.latent == "sample")
        return z

    def _reconstruct(self, table: pa.Table, keep: list[int], ids: list[str], docs: infer.Docs, z: Tensor) -> pa.Table:
        seeds = [infer.row_seed(self.cfg.seed, f"decode:{i}") for i in ids]
        texts = self._decode_all(lambda rows: z[rows], seeds)
        columns = {"id": pa.array(ids, pa.string()), **self._text_columns(texts)}
        columns["truncated"] = pa.array(docs.truncated, pa.bool_())
        columns["n_tokens"] = pa.array(docs.n_tokens, pa.int32())
        passthrough = passthrough_of(table, keep, self.spec.input.passthrough_columns)
        return output_table(columns, passthrough=passthrough, provenance=self.provenance)

    def _interpolate(self, ids: list[str], docs: infer.Docs, z: Tensor) -> pa.Table:
        steps, pairs = self.cfg.steps, len(ids) // 2
        rows: dict[str, list[Any]] = {k: [] for k in ("id", "id_a", "id_b", "step", "t", "truncated")}
        zs = []
        for p in range(pairs):
            a, b = 2 * p, 2 * p + 1
            zs.append(interpolate(z[a], z[b], steps=steps, method=self.cfg.interpolation))  # (S, Z)
            for s in range(steps):
                values = (f"{ids[a]}~{ids[b]}#{s}", ids[a], ids[b], s, s / (steps - 1))
                for key, value in zip(("id", "id_a", "id_b", "step", "t"), values, strict=True):
                    rows[key].append(value)
                rows["truncated"].append(docs.truncated[a] or docs.truncated[b])
        path = torch.cat(zs) if zs else torch.zeros((0, self.model.z_dim), device=self.device)  # (P*S, Z)
        seeds = [infer.row_seed(self.cfg.seed, f"decode:{i}") for i in rows["id"]]
        texts = self._decode_all(lambda r: path[r], seeds)
        columns: dict[str, Any] = {
            "id": pa.array(rows["id"], pa.string()),
            "id_a": pa.array(rows["id_a"], pa.string()),
            "id_b": pa.array(rows["id_b"], pa.string()),
            "step": pa.array(rows["step"], pa.int32()),
            "t": pa.array(rows["t"], pa.float32()),
            **self._text_columns(texts),
            "truncated": pa.array(rows["truncated"], pa.bool_()),
        }
        return output_table(columns, passthrough=None, provenance=self.provenance)

    def _decode_all(self, latents: Any, seeds: list[int]) -> list[list[int]]:
        """Decode rows in batches of run.batch_size; latents(rows) gives their z (b, Z)."""
        out: list[list[int]] = []
        size = self.spec.run.batch_size
        for start in range(0, len(seeds), size):
            rows = list(range(start, min(start + size, len(seeds))))
            z = latents(rows)
            out.extend(decode_latents(self.model, z, params=self.params, seeds=[seeds[i] for i in rows]))
        return out

    def _text_columns(self, token_ids: list[list[int]]) -> dict[str, pa.Array]:
        return {
            "generated": pa.array([decode(self.tok, ids) for ids in token_ids], pa.string()),
            "generated_tokens": pa.array([len(ids) for ids in token_ids], pa.int32()),
        }
