"""`vaelm embed | score | classify | generate` on a real local Ray cluster, local files and SeaweedFS.

The model is a tiny untrained VAE with a real tokenizer (tests/support/artifacts.py): these tests check
the mechanics (schemas, provenance, counts, exactly once, seeds), not model quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.artifacts import write_artifact
from tests.support.corpus import make_docs, write_corpus
from tests.support.datasets import ids_in, read_folder, run_cli, write_spec
from vaelm import storage
from vaelm.cli import main
from vaelm.model.artifact import load_artifact
from vaelm.pipeline.batch_io import read_artifact_files

pytestmark = pytest.mark.timeout(180)

BAD_UTF8 = b"\xe8\xbf\x99\xff\xfe" + "家店很好。".encode()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_artifact(str(tmp_path_factory.mktemp("model")), labels=["en", "zh"], max_tokens=48)


def spec_for(job: str, model: str, inp: str | None, out: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"job": job, "model": model, "output": out, "run": {"batch_size": 16}}
    if inp is not None:
        spec["input"] = {"paths": [inp], "rows_per_unit": 30}
    spec.update(extra)
    return spec


def run_job(tmp_path: Path, name: str, spec: dict[str, Any], *args: str) -> int:
    return main(["run", str(write_spec(tmp_path / f"{name}.yaml", spec)), *args])


def messy_table(n: int = 60) -> pa.Table:
    texts: list[bytes | None] = [d.encode() for d in make_docs(n, seed=5)]
    texts += [None, b"", b"   ", BAD_UTF8, ("很长的文档" * 200).encode()]
    ids = [f"m{i:03d}" for i in range(len(texts))]
    return pa.table({"id": ids, "text": pa.array(texts, pa.binary()), "lang": ["x"] * len(texts)})


def all_ids(out: str) -> list[str]:
    return sorted(ids_in(out, "data") + ids_in(out, "rejects"))


def test_embed_on_s3_schema_provenance_rejects_and_counts(
    ray_cluster: str, s3_bucket: str, model_dir: str, tmp_path: Path
) -> None:
    model = write_artifact(f"{s3_bucket}/model", labels=["en", "zh"], max_tokens=48)
    table = messy_table()
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=20)
    storage.write_bytes(storage.open_location(f"{s3_bucket}/in/a.parquet"), (tmp_path / "a.parquet").read_bytes())
    out = f"{s3_bucket}/emb"
    extra: dict[str, Any] = {"embed": {"include_sigma": True}}
    extra["input"] = {"paths": [f"{s3_bucket}/in"], "rows_per_unit": 20, "passthrough_columns": ["lang"]}
    assert run_job(tmp_path, "embed", spec_for("embed", model, None, out, **extra)) == 0

    data = read_folder(out, "data")
    assert data.column_names == ["id", "embedding", "sigma", "truncated", "n_tokens", "lang", "model_id", "job_id"]
    assert data.schema.field("embedding").type == pa.list_(pa.float32())
    assert {len(v) for v in data.column("embedding").to_pylist()} == {4}
    model_id = load_artifact(read_artifact_files(model, None)).model_id  # type: ignore[arg-type]
    manifest = storage.read_json(storage.open_location(f"{out}/manifest.json"))
    assert set(data.column("model_id").to_pylist()) == {model_id} == {manifest["model"]["model_id"]}
    assert set(data.column("job_id").to_pylist()) == {manifest["job_id"]}
    assert all_ids(out) == sorted(table.column("id").to_pylist()), "every input row once, in data or rejects"

    reasons = dict(zip(*(read_folder(out, "rejects").column(c).to_pylist() for c in ("id", "reason")), strict=True))
    assert reasons == {"m060": "null_text", "m061": "empty", "m062": "empty", "m063": "invalid_utf8:byte_3"}
    flagged = dict(zip(data.column("id").to_pylist(), data.column("truncated").to_pylist(), strict=True))
    assert flagged["m064"] is True
    counts = manifest["counts"]
    assert counts["rows_in"] == 65 == counts["documents_out"] + counts["rejected"] and counts["rejected"] == 4
    assert counts["truncated"] == sum(flagged.values())
    assert storage.exists(storage.open_location(f"{out}/_SUCCESS"))
    assert storage.list_files(storage.open_location(f"{out}/_work"), suffix="") == []


def test_score_is_readable_everywhere_and_independent_of_batching(
    ray_cluster: str, model_dir: str, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "in", make_docs(70, seed=6), files=2, row_group_size=15)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    score = {"score": {"iw_samples": 4, "seed": 3}}
    assert run_job(tmp_path, "a", spec_for("score", model_dir, str(tmp_path / "in"), a, **score)) == 0
    spec_b = spec_for("score", model_dir, str(tmp_path / "in"), b, **score, run={"batch_size": 5})
    assert run_job(tmp_path, "b", spec_b) == 0

    import fastparquet
    import pandas as pd

    first = str(tmp_path / "a" / "data" / "part-00000.parquet")
    by_arrow = pq.read_table(first).to_pandas()
    by_pandas = pd.read_parquet(first)
    by_fastparquet = fastparquet.ParquetFile(first).to_pandas()
    for frame in (by_pandas, by_fastparquet):
        assert list(frame.columns) == list(by_arrow.columns)
        assert frame["id"].tolist() == by_arrow["id"].tolist()
        assert frame["elbo_nll"].tolist() == pytest.approx(by_arrow["elbo_nll"].tolist())
    assert pd.read_parquet(tmp_path / "a" / "data").shape[0] == 70

    ta, tb = (read_folder(x, "data").sort_by("id") for x in (a, b))
    assert ta.column("id").to_pylist() == tb.column("id").to_pylist()
    for col in ("elbo_nll", "iw_nll", "nll_per_token"):
        assert ta.column(col).to_pylist() == pytest.approx(tb.column(col).to_pylist(), rel=1e-4)
    row = ta.slice(0, 1).to_pylist()[0]
    assert row["elbo_nll"] == pytest.approx(row["rec_nll"] + row["kl"], rel=1e-5)
    assert row["nll_per_token"] == pytest.approx(row["elbo_nll"] / row["target_tokens"], rel=1e-5)


def test_bf16_precision_is_applied_close_to_fp32_and_reproducible(
    ray_cluster: str, model_dir: str, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "in", make_docs(40, seed=8), files=1, row_group_size=20)

    def embed(name: str, precision: str) -> list[list[float]]:
        spec = spec_for("embed", model_dir, str(tmp_path / "in"), str(tmp_path / name))
        spec["run"]["precision"] = precision
        assert run_job(tmp_path, name, spec) == 0
        return read_folder(str(tmp_path / name), "data").sort_by("id").column("embedding").to_pylist()

    full, half = embed("fp32", "fp32"), embed("bf16", "bf16")
    diffs = [abs(x - y) for a, b in zip(full, half, strict=True) for x, y in zip(a, b, strict=True)]
    scale = max(abs(x) for row in full for x in row)
    assert 0 < max(diffs) < 0.05 * scale, "bf16 must change the arithmetic (else it was not applied), a little"

    def generate(name: str) -> list[str]:
        gen = {"mode": "prior", "num_samples": 12, "seed": 4, "max_len": 12}
        spec = spec_for("generate", model_dir, None, str(tmp_path / name), generate=gen)
        spec["run"]["precision"] = "bf16"
        assert run_job(tmp_path, name, spec) == 0
        return read_folder(str(tmp_path / name), "data").sort_by("sample_index").column("generated").to_pylist()

    assert generate("gen-a") == generate("gen-b"), "bf16 generation is reproducible for the same spec"


def test_classify_killed_midway_then_rerun_writes_each_id_once(
    ray_cluster: str, model_dir: str, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "in", make_docs(150, seed=7), files=2, row_group_size=15)
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "c.yaml", spec_for("classify", model_dir, str(tmp_path / "in"), str(out)))

    killed = run_cli("classify", str(spec), env={"VAELM_FAULT_EXIT_AFTER_COMMITS": "2"})
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not (out / "_SUCCESS").exists()
    assert len(list((out / "_work" / "units").glob("*.json"))) == 2

    rerun = run_cli("classify", str(spec))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming, 2 of" in rerun.stderr and "resumed and completed" in rerun.stdout
    assert all_ids(str(out)) == sorted(corpus.ids)
    data = read_folder(str(out), "data")
    assert set(data.column("label").to_pylist()) <= {"en", "zh"}
    probs = data.column("probabilities").to_pylist()
    assert all(abs(sum(p) - 1) < 1e-4 and len(p) == 2 for p in probs)

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_cli("classify", str(spec))
    assert again.returncode == 0 and "already complete" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before, "a no-op writes nothing"
    refused = run_cli("classify", str(spec), "--set", "classify.probabilities=false")
    assert refused.returncode == 2 and "a different spec" in refused.stderr and "--overwrite" in refused.stderr


def test_generate_prior_is_identical_for_a_fixed_seed(ray_cluster: str, model_dir: str, tmp_path: Path) -> None:
    def prior(name: str, seed: int, per_unit: int, batch: int) -> pa.Table:
        gen = {"mode": "prior", "num_samples": 24, "samples_per_unit": per_unit, "seed": seed, "top_p": 0.9}
        gen["batch_size"] = batch
        spec = spec_for("generate", model_dir, None, str(tmp_path / name), generate=gen)
        assert run_job(tmp_path, name, spec) == 0
        return read_folder(str(tmp_path / name), "data").sort_by("sample_index")

    a, again, c = prior("a", 1, 10, 16), prior("again", 1, 10, 16), prior("c", 2, 10, 16)
    assert a.num_rows == 24 and a.column("sample_index").to_pylist() == list(range(24))
    assert a.column("generated").to_pylist() == again.column("generated").to_pylist(), "same spec, same text"
    assert a.column("generated").to_pylist() != c.column("generated").to_pylist()
    assert a.column_names == ["id", "sample_index", "row_seed", "generated", "generated_tokens", "model_id", "job_id"]
    manifest = storage.read_json(storage.open_location(str(tmp_path / "a" / "manifest.json")))
    assert manifest["spec"]["generate"]["top_p"] == 0.9 and manifest["counts"]["rows_out"] == 24
    # other units and batches: per-row seeds keep (nearly) every sample; exact equality is not promised
    other = prior("b", 1, 7, 3)
    pairs = zip(a.column("generated").to_pylist(), other.column("generated").to_pylist(), strict=True)
    same = sum(x == y for x, y in pairs)
    assert same >= 20, f"only {same} of 24 samples agree across batch sizes"


def test_generate_reconstruct_and_interpolate_account_for_every_input(
    ray_cluster: str, model_dir: str, tmp_path: Path
) -> None:
    table = messy_table(20)  # 20 docs + a long one usable (odd: one is left unpaired), 4 bad rows
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "a.parquet", row_group_size=100)
    inp, rec, itp = str(tmp_path / "in"), str(tmp_path / "rec"), str(tmp_path / "itp")
    gen = {"mode": "reconstruct", "latent": "sample", "strategy": "greedy", "max_len": 10}
    assert run_job(tmp_path, "rec", spec_for("generate", model_dir, inp, rec, generate=gen)) == 0
    assert all_ids(rec) == sorted(table.column("id").to_pylist())
    assert max(read_folder(rec, "data").column("generated_tokens").to_pylist()) <= 10

    gen = {"mode": "interpolate", "steps": 3, "strategy": "beam", "beam_width": 2, "max_len": 8}
    assert run_job(tmp_path, "itp", spec_for("generate", model_dir, inp, itp, generate=gen)) == 0
    data = read_folder(itp, "data")
    rejects = ids_in(itp, "rejects")
    used = set(data.column("id_a").to_pylist()) | set(data.column("id_b").to_pylist())
    assert sorted([*used, *rejects]) == sorted(table.column("id").to_pylist())
    assert data.num_rows == 3 * len(used) // 2 and data.column("step").to_pylist()[:3] == [0, 1, 2]
    reasons = read_folder(itp, "rejects").column("reason").to_pylist()
    assert reasons.count("unpaired") == 1 and len(reasons) == 5


def test_generate_interpolates_each_row_to_its_target_column(ray_cluster: str, model_dir: str, tmp_path: Path) -> None:
    docs = make_docs(12, seed=8)
    texts: list[bytes | None] = [*(d.encode() for d in docs[:6]), None, docs[6].encode()]
    targets: list[bytes | None] = [*(d.encode() for d in docs[6:12]), docs[0].encode(), None]
    texts += [docs[7].encode(), docs[8].encode()]
    targets += [b"  ", BAD_UTF8]
    ids = [f"p{i:02d}" for i in range(len(texts))]
    table = pa.table(
        {
            "id": ids,
            "text": pa.array(texts, pa.binary()),
            "goal": pa.array(targets, pa.binary()),
            "lang": [f"l{i}" for i in range(len(ids))],
        }
    )
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "a.parquet", row_group_size=5)
    out = str(tmp_path / "out")
    gen = {"mode": "interpolate", "target_column": "goal", "steps": 3, "strategy": "greedy", "max_len": 8}
    spec = spec_for("generate", model_dir, str(tmp_path / "in"), out, generate=gen)
    spec["input"]["passthrough_columns"] = ["lang"]
    assert run_job(tmp_path, "t", spec) == 0

    data = read_folder(out, "data").sort_by("id")
    assert data.column_names[:5] == ["id", "input_id", "step", "t", "generated"]
    assert sorted(set(data.column("input_id").to_pylist())) == ids[:6], "each usable row, once per step"
    assert data.num_rows == 6 * 3 and data.column("id").to_pylist()[:3] == ["p00#0", "p00#1", "p00#2"]
    assert data.column("t").to_pylist()[:3] == [0.0, 0.5, 1.0]
    assert data.column("lang").to_pylist()[:3] == ["l0"] * 3, "passthrough repeated on every step"
    rejects = read_folder(out, "rejects").sort_by("id")
    assert dict(zip(rejects.column("id").to_pylist(), rejects.column("reason").to_pylist(), strict=True)) == {
        "p06": "null_text",
        "p07": "target_null_text",
        "p08": "target_empty",
        "p09": "target_invalid_utf8:byte_3",
    }
    counts = storage.read_json(storage.open_location(f"{out}/manifest.json"))["counts"]
    assert counts["rows_in"] == 10 == counts["documents_out"] + counts["rejected"] and counts["rows_out"] == 18

    # step 0 decodes the row's own text, the last step its target: the same as reconstructing them
    rec = str(tmp_path / "rec")
    gen = {"mode": "reconstruct", "strategy": "greedy", "max_len": 8}
    assert run_job(tmp_path, "r", spec_for("generate", model_dir, str(tmp_path / "in"), rec, generate=gen)) == 0
    rebuilt = dict(zip(*(read_folder(rec, "data").column(c).to_pylist() for c in ("id", "generated")), strict=True))
    first = dict(zip(data.column("id").to_pylist(), data.column("generated").to_pylist(), strict=True))
    assert all(first[f"{i}#0"] == rebuilt[i] for i in ids[:6])


def test_generate_target_column_is_validated(
    ray_cluster: str, model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_corpus(tmp_path / "in", make_docs(4), files=1)
    inp = str(tmp_path / "in")
    gen: dict[str, Any] = {"mode": "reconstruct", "target_column": "goal"}
    assert run_job(tmp_path, "a", spec_for("generate", model_dir, inp, str(tmp_path / "a"), generate=gen)) == 2
    err = capsys.readouterr().err
    assert "generate.target_column='goal' is only read by mode: interpolate (mode is reconstruct)" in err
    gen = {"mode": "interpolate", "target_column": "text"}
    assert run_job(tmp_path, "b", spec_for("generate", model_dir, inp, str(tmp_path / "b"), generate=gen)) == 2
    assert "is input.text_column too" in capsys.readouterr().err
    gen = {"mode": "interpolate", "target_column": "goal"}
    assert run_job(tmp_path, "c", spec_for("generate", model_dir, inp, str(tmp_path / "c"), generate=gen)) == 2
    err = capsys.readouterr().err
    assert "column 'goal' (generate.target_column) not found in" in err and "set generate.target_column" in err


# -- job-level errors --------------------------------------------------------------------------------


def test_job_level_errors_are_clear(
    ray_cluster: str, model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "in" / "a.parquet")
    inp = str(tmp_path / "in")
    assert run_job(tmp_path, "s1", spec_for("embed", model_dir, inp, str(tmp_path / "o1"))) == 2
    assert "column 'text' not found" in capsys.readouterr().err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert run_job(tmp_path, "s2", spec_for("embed", str(broken), inp, str(tmp_path / "o2"))) == 2
    err = capsys.readouterr().err
    assert f"model artifact {broken} cannot be loaded" in err

    no_clf = write_artifact(str(tmp_path / "vae"))
    write_corpus(tmp_path / "ok", make_docs(5), files=1)
    assert run_job(tmp_path, "s3", spec_for("classify", no_clf, str(tmp_path / "ok"), str(tmp_path / "o3"))) == 2
    assert "has no classifier" in capsys.readouterr().err


def test_a_worker_refuses_an_artifact_that_changed_after_the_job_started(model_dir: str, tmp_path: Path) -> None:
    from vaelm.config.batch import EmbedSpec
    from vaelm.errors import InputError
    from vaelm.pipeline.batch_io import load_model
    from vaelm.pipeline.batch_steps import EmbedStep

    spec = EmbedSpec.model_validate(spec_for("embed", model_dir, str(tmp_path / "in"), str(tmp_path / "out")))
    model_id = load_model(read_artifact_files(model_dir, spec.storage), uri=model_dir).model_id
    assert EmbedStep(spec.model_dump(), model_id).art.model_id == model_id  # each worker reads the artifact
    with pytest.raises(InputError, match="changed while the job ran"):
        EmbedStep(spec.model_dump(), "0123456789abcdef")
