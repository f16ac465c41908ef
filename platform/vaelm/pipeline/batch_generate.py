"""The per-unit step of `vaelm generate`: prior samples, reconstructions, interpolations.

Prior units are ranges of sample indices (no input); the others are units of input rows. Every output
row's randomness comes from (generate.seed, its key): the sample index, or the input id. Latent codes are
decoded in batches of generate.batch_size.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from vaelm import storage
from vaelm.config.batch import GenerateSpec
from vaelm.errors import InputError
from vaelm.model import infer
from vaelm.model.decode import interpolate
from vaelm.model.generation import DecodeParams, decode_latents, posterior_latents, prior_latents
from vaelm.pipeline.batch_io import check_rows, check_targets, output_table, passthrough_of
from vaelm.pipeline.batch_steps import ModelStep, _stats
from vaelm.pipeline.preprocess_steps import Rejects
from vaelm.pipeline.units import TEXT_TYPES, Unit, read_unit
from vaelm.text.tokenizer import decode


def prior_units(num_samples: int, per_unit: int) -> list[Unit]:
    """Units of sample indices [first_row, first_row + rows): stable for a given spec."""
    starts = range(0, num_samples, per_unit)
    return [Unit(k, "", "prior", (), s, min(per_unit, num_samples - s), False) for k, s in enumerate(starts)]


def check_target_column(spec: GenerateSpec, file_uris: list[str]) -> None:
    """generate.target_column must be a text column of every input file (checked before any actor starts)."""
    target = spec.generate.target_column
    if target is None or spec.input is None:
        return
    for uri in file_uris:
        loc = storage.open_location(uri, spec.storage)
        with storage.storage_errors(loc, "open"), loc.fs.open_input_file(loc.path) as f:
            schema = pq.ParquetFile(f).schema_arrow
        if target not in schema.names:
            raise InputError(
                f"column '{target}' (generate.target_column) not found in {uri}; its columns are {schema.names}; "
                "set generate.target_column to the column holding each row's target text"
            )
        if schema.field(target).type not in TEXT_TYPES:
            raise InputError(
                f"column '{target}' (generate.target_column) in {uri} has type {schema.field(target).type}; "
                "it must hold text (string)"
            )


def keep_freed_memory() -> bool:
    """Let glibc keep large freed blocks in the heap (this process only). Decoding allocates (B, V) logits
    every step; by default glibc hands such blocks back to the OS at once and page-faults them in again
    on the next step, about a tenth of the CPU time at B=256. Peak memory is the same; what is freed after
    a peak is kept for reuse (up to 512 MiB) instead of returned to the OS. True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 512 * 2**20))


class GenerateStep(ModelStep):
    def __init__(self, spec_data: dict[str, Any], model_id: str) -> None:
        super().__init__(spec_data, model_id)
        keep_freed_memory()
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
        inp = self.spec.input
        if self.cfg.target_column:  # read the target column too, without passing it through
            inp = inp.model_copy(update={"passthrough_columns": [*inp.passthrough_columns, self.cfg.target_column]})
        table = read_unit(unit, inp, self.spec.storage)
        rejects = Rejects("generate", self.spec.run.excerpt_chars)
        keep, texts = check_rows(table, unit, self.spec.run, rejects)
        if self.cfg.target_column:
            return self._to_targets(unit, table, keep, texts, rejects)
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

    def _to_targets(
        self, unit: Unit, table: pa.Table, keep: list[int], texts: list[str], rejects: Rejects
    ) -> dict[str, Any]:
        """interpolate with target_column: `steps` points from each row's text to its own target text."""
        assert self.cfg.target_column is not None
        text_of = dict(zip(keep, texts, strict=True))
        keep, targets = check_targets(table, self.cfg.target_column, keep, unit, self.spec.run, rejects)
        texts = [text_of[i] for i in keep]
        ids = [table.column("id")[i].as_py() for i in keep]
        src = infer.encode_docs(self.tok, texts, max_tokens=self.max_tokens)
        dst = infer.encode_docs(self.tok, targets, max_tokens=self.max_tokens)
        z_src, z_dst = self._encode(src, ids), self._encode(dst, [f"{i}:target" for i in ids])  # (N, Z) each
        steps = self.cfg.steps
        path = [
            interpolate(a, b, steps=steps, method=self.cfg.interpolation) for a, b in zip(z_src, z_dst, strict=True)
        ]
        z = torch.cat(path) if path else torch.zeros((0, self.model.z_dim), device=self.device)  # (N*S, Z)
        out_ids = [f"{i}#{s}" for i in ids for s in range(steps)]
        seeds = [infer.row_seed(self.cfg.seed, f"decode:{i}") for i in out_ids]
        tokens = self._decode_all(lambda r: z[r], seeds)
        flagged = [a or b for a, b in zip(src.truncated, dst.truncated, strict=True)]
        columns: dict[str, Any] = {
            "id": pa.array(out_ids, pa.string()),
            "input_id": pa.array([i for i in ids for _ in range(steps)], pa.string()),
            "step": pa.array([s for _ in ids for s in range(steps)], pa.int32()),
            "t": pa.array([s / (steps - 1) for _ in ids for s in range(steps)], pa.float32()),
            **self._text_columns(tokens),
            "truncated": pa.array([f for f in flagged for _ in range(steps)], pa.bool_()),
        }
        repeated = [i for i in keep for _ in range(steps)]
        passthrough = passthrough_of(table, repeated, self.spec.input.passthrough_columns)
        out = output_table(columns, passthrough=passthrough, provenance=self.provenance)
        self.write(unit, out, rejects)
        return _stats(table.num_rows, len(keep), out.num_rows, rejects, sum(flagged))

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
        """Decode rows in batches of generate.batch_size; latents(rows) gives their z (b, Z)."""
        out: list[list[int]] = []
        size = self.cfg.batch_size
        for start in range(0, len(seeds), size):
            rows = list(range(start, min(start + size, len(seeds))))
            z = latents(rows)
            with self.precision():
                out.extend(decode_latents(self.model, z, params=self.params, seeds=[seeds[i] for i in rows]))
        return out

    def _text_columns(self, token_ids: list[list[int]]) -> dict[str, pa.Array]:
        return {
            "generated": pa.array([decode(self.tok, ids) for ids in token_ids], pa.string()),
            "generated_tokens": pa.array([len(ids) for ids in token_ids], pa.int32()),
        }
