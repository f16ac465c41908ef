"""S3 faults during `vaelm preprocess`, through a TCP proxy in front of the real SeaweedFS server:
an outage of a few seconds in the middle of the writes, and a slow link. Whatever happens, the input
ids come out once each (train + val + rejects), after a rerun if the first run failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.integration.test_preprocess import corpus_with_duplicates, spec_for, upload
from tests.reliability.faultproxy import FaultProxy
from tests.support.corpus import make_docs, write_corpus
from tests.support.datasets import dataset_ids, write_spec
from tests.support.s3server import S3Server, s3_client
from vaelm import storage
from vaelm.cli import main

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    url = urlparse(s3_server.endpoint)
    p = FaultProxy(url.hostname or "127.0.0.1", int(url.port or 80))
    yield p
    p.close()


def when_committed(
    s3_server: S3Server, bucket: str, prefix: str, n: int, action: Callable[[], None]
) -> threading.Thread:
    """Run `action` once `n` commit markers exist under prefix (watched directly, not through the proxy)."""
    client = s3_client(s3_server)

    def watch() -> None:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            found = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)
            if found >= n:
                action()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def assert_reconciles(out: str, ids: list[str]) -> None:
    train, val, rejects = dataset_ids(out)
    assert sorted(train + val + rejects) == sorted(ids), "every input id exactly once"
    assert storage.exists(storage.open_location(out).join("_SUCCESS"))


def test_s3_outage_during_writes_then_rerun_loses_and_duplicates_nothing(
    ray_cluster: str,
    s3_server: S3Server,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids, _ = corpus_with_duplicates(tmp_path / "in")
    upload(tmp_path / "in", f"{s3_bucket}/corpus")
    out = f"{s3_bucket}/dataset"
    storage_cfg = {"endpoint": proxy.endpoint, "retries": 3, "connect_timeout_s": 1, "request_timeout_s": 5}
    spec = spec_for(f"{s3_bucket}/corpus", out, storage=storage_cfg)
    spec["input"]["rows_per_unit"] = 20
    path = write_spec(tmp_path / "s.yaml", spec)
    fault_at: list[float] = []

    def cut() -> None:
        fault_at.append(time.monotonic())
        proxy.outage(6.0)

    when_committed(s3_server, s3_bucket.removeprefix("s3://"), "dataset/_work/clean/", 2, cut)
    started = time.monotonic()
    code = main(["preprocess", str(path)])
    ended = time.monotonic()
    err = capsys.readouterr().err
    assert fault_at, "the outage never happened: the job finished before 2 units were committed"
    print(f"first run: exit {code} after {ended - started:.1f}s, {ended - fault_at[0]:.1f}s after the outage began")
    if code != 0:
        assert code == 1 and "Traceback" not in err
        assert "cannot" in err and "S3 endpoint cannot be reached" in err, err[-2000:]
        assert ended - fault_at[0] < 60, "a failure must come within a bounded time"
        time.sleep(max(0.0, fault_at[0] + 6.5 - time.monotonic()))  # the server is back
        assert not storage.exists(storage.open_location(out).join("_SUCCESS"))
        assert main(["preprocess", str(path)]) == 0
    assert_reconciles(out, ids)


def test_slow_s3_endpoint_completes(ray_cluster: str, s3_bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    ids = write_corpus(tmp_path / "in", make_docs(80, seed=5), files=2).ids
    upload(tmp_path / "in", f"{s3_bucket}/corpus")
    out = f"{s3_bucket}/dataset"
    proxy.delay_s = 0.02  # every chunk in both directions: 40 ms or more per request
    spec = spec_for(f"{s3_bucket}/corpus", out, storage={"endpoint": proxy.endpoint, "request_timeout_s": 10})
    started = time.monotonic()
    assert main(["preprocess", str(write_spec(tmp_path / "s.yaml", spec))]) == 0
    print(f"slow endpoint: completed in {time.monotonic() - started:.1f}s over {proxy.connections} connections")
    assert proxy.connections > 0, "the job must have gone through the proxy"
    assert_reconciles(out, ids)


def test_s3_endpoint_that_never_answers_fails_within_the_configured_bound(
    s3_bucket: str, proxy: FaultProxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.blackhole = True  # connections are accepted, requests swallowed
    storage_cfg = {"endpoint": proxy.endpoint, "retries": 2, "connect_timeout_s": 1, "request_timeout_s": 2}
    spec = spec_for(f"{s3_bucket}/corpus", f"{s3_bucket}/dataset", storage=storage_cfg)
    started = time.monotonic()
    code = main(["preprocess", str(write_spec(tmp_path / "s.yaml", spec))])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    print(f"black hole: exit {code} after {elapsed:.1f}s (retries=2, request_timeout_s=2)")
    assert code == 1 and "S3 endpoint cannot be reached" in err and f"{s3_bucket}/corpus" in err, err
    assert elapsed < 2 * (2 + 1) + 10, "bounded by retries x (timeout + backoff)"
