"""Security: credentials are never printed, logged or written; ids never become paths; nothing unpickles
and YAML is loaded safely. (k8s securityContext checks live in tests/k8s.)"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO_ROOT
from tests.integration.test_preprocess import spec_for, upload
from tests.support.corpus import make_docs
from tests.support.datasets import dataset_ids, run_cli, write_spec
from tests.support.s3server import S3Server, s3_client
from vaelm.cli import main

pytestmark = pytest.mark.timeout(300)

HOSTILE_IDS = [
    "../../etc/passwd",
    "a/b",
    "/abs/olute",
    "..",
    ".",
    "C:\\Windows\\win.ini",
    "%2e%2e%2fx",
    "id with spaces",
    "\u202eevil\u202c",
    "_SUCCESS",
    "part-00000",
]


def test_credentials_never_appear_in_outputs_logs_or_messages(
    ray_cluster: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    secrets = (s3_server.access_key, s3_server.secret_key)
    ids = HOSTILE_IDS + [f"doc-{i}" for i in range(50 - len(HOSTILE_IDS))]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ids, "text": make_docs(50, seed=31)}), tmp_path / "in" / "part-0.parquet")
    upload(tmp_path / "in", f"{s3_bucket}/corpus")
    out = f"{s3_bucket}/dataset"
    # the keys are given in the spec itself (the worst case), not in the environment
    storage_cfg = {"access_key": secrets[0], "secret_key": secrets[1]}
    spec = write_spec(tmp_path / "s.yaml", spec_for(f"{s3_bucket}/corpus", out, storage=storage_cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("VAELM_S3_ACCESS_KEY", "VAELM_S3_SECRET_KEY")}
    env.pop("VAELM_DEBUG", None)

    runs = [run_cli("preprocess", str(spec), env=env)]
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]
    debug = {**env, "VAELM_DEBUG": "1"}
    runs.append(run_cli("preprocess", str(spec), env=debug))  # a no-op rerun, in debug mode
    runs.append(run_cli("preprocess", str(spec), "--dry-run", "--set", f"storage.secret_key={secrets[1]}", env=debug))
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr[-2000:] for r in runs]
    assert "already complete" in runs[1].stdout and '"secret_key"' in runs[2].stdout

    texts = {f"run {i} {name}": getattr(r, name) for i, r in enumerate(runs) for name in ("stdout", "stderr")}
    client = s3_client(s3_server)
    bucket = s3_bucket.removeprefix("s3://")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.endswith("manifest.json") for k in keys) and any(k.startswith("dataset/train/") for k in keys)
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        texts[f"s3 object {key}"] = body.decode("latin-1")
    texts.update(ray_logs())
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a credential appears in {where}"

    # ids with slashes and dots stay data: every one comes back as a plain string, no key is made from one
    train, val, rejects = dataset_ids(out)
    assert sorted(train + val + rejects) == sorted(ids)
    assert all(k.startswith(("corpus/", "dataset/")) for k in keys), keys
    assert not [k for k in keys if "passwd" in k or "olute" in k or "win.ini" in k], keys


def ray_logs() -> dict[str, str]:
    """Every log file of this session's Ray cluster (drivers, workers, raylet, GCS)."""
    import ray

    node = ray._private.worker.global_worker.node
    logs = Path(node.get_logs_dir_path())
    found = {f"ray log {p.name}": p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()}
    assert found, f"no Ray logs under {logs}"
    return found


def test_dry_run_masks_secrets_given_in_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage_cfg = {"access_key": "AKIAFAKEFAKEFAKE1234", "secret_key": "fake/Secret+Key-DO-NOT-PRINT"}
    spec = write_spec(tmp_path / "s.yaml", spec_for("s3://b/in", "s3://b/out", storage=storage_cfg))
    assert main(["preprocess", str(spec), "--dry-run"]) == 0
    shown = capsys.readouterr()
    for secret in storage_cfg.values():
        assert secret not in shown.out and secret not in shown.err
    assert "**********" in shown.out


# -- code scan: nothing unpickles, YAML only through safe_load, no eval/exec ------------------------


def calls_in(path: Path) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            found.append((ast.unparse(node.func), node))
    return found


def test_code_never_unpickles_or_loads_yaml_unsafely() -> None:
    bad = []
    for path in sorted((REPO_ROOT / "platform" / "vaelm").rglob("*.py")):
        for name, call in calls_in(path):
            kwargs = {k.arg: ast.unparse(k.value) for k in call.keywords}
            where = f"{path.relative_to(REPO_ROOT)}:{call.lineno} {name}"
            if name in ("pickle.load", "pickle.loads", "cloudpickle.loads", "dill.load", "eval", "exec"):
                bad.append(where)
            elif name == "torch.load" and kwargs.get("weights_only") != "True":
                bad.append(f"{where} without weights_only=True")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                bad.append(where)
            elif name in ("np.load", "numpy.load") and kwargs.get("allow_pickle") == "True":
                bad.append(f"{where} with allow_pickle=True")
    assert not bad, bad
