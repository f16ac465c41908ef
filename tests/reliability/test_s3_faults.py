"""S3 faults, through a TCP proxy in front of the real SeaweedFS server: an outage of a few seconds in
the middle of `vaelm preprocess`'s writes (ridden out by storage's retries, no rerun), an outage longer
than `storage.retry_max_s` (a clear error within a bounded time, then a rerun completes), a slow link,
and a black hole. Whatever happens, the input ids come out once each (train + val + rejects).

The first tests check the retry policy itself (what is transient, backoff, the deadline) without a
server; the `faults` ones need SeaweedFS and Ray."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.test_preprocess import corpus_with_duplicates, spec_for, upload
from tests.reliability.faultproxy import FaultProxy
from tests.support.corpus import make_docs, write_corpus
from tests.support.datasets import dataset_ids, read_folder, write_spec
from tests.support.s3server import S3Server, s3_client
from vaelm import retry, storage
from vaelm.cli import main
from vaelm.config.common import StorageConfig
from vaelm.errors import StorageError

pytestmark = [pytest.mark.timeout(300)]

REFUSED = (
    "When getting information for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION during HeadObject "
    "operation: curlCode: 7, Could not connect to server"
)


# -- the retry policy, no server -------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        OSError(REFUSED),
        OSError("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 56, Failure when receiving data"),
        OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 28, Timeout was reached"),
        OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."),
        OSError("AWS Error UNKNOWN (HTTP status 503) during CompleteMultipartUpload operation: Service Unavailable"),
        OSError("AWS Error SERVICE_UNAVAILABLE during ListObjectsV2 operation"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
    ],
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert retry.is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError("Path does not exist 'b/k'"),
        PermissionError(13, "Permission denied"),
        OSError("AWS Error ACCESS_DENIED during PutObject operation: Access Denied"),
        OSError("AWS Error INVALID_ACCESS_KEY_ID during HeadObject operation: no such key id"),
        OSError("AWS Error SIGNATURE_DOES_NOT_MATCH during PutObject operation"),
        OSError("AWS Error UNKNOWN (HTTP status 403) during HeadObject operation: Forbidden; curlCode: 28"),
        OSError("Bucket 'b' not found: AWS Error NO_SUCH_BUCKET during HeadBucket operation"),
        OSError(28, "No space left on device"),
        ValueError("curlCode: 7 in a value error is a bug, not an outage"),
    ],
)
def test_auth_permission_not_found_and_bugs_are_not_retried(exc: BaseException) -> None:
    assert not retry.is_transient(exc)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def failing(times: int, exc: BaseException, clock: FakeClock, *, cost_s: float = 0.0) -> Callable[[], str]:
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        clock.now += cost_s
        if calls["n"] <= times:
            raise exc
        return "done"

    return fn


def test_retry_backs_off_in_seconds_with_jitter_until_it_succeeds() -> None:
    clock = FakeClock()
    tries = retry.Tries()
    fn = failing(5, OSError(REFUSED), clock)
    assert retry.retry_call(fn, max_s=60, tries=tries, sleep=clock.sleep, clock=lambda: clock.now) == "done"
    assert tries.count == 6
    for i, wait in enumerate(clock.waits):  # 0.5 s doubling, jittered between half and all of it
        assert 0.5 * min(8.0, 0.5 * 2**i) <= wait <= min(8.0, 0.5 * 2**i)
    assert 4 <= sum(clock.waits) <= 15.5, "five refusals are bridged over seconds, not milliseconds"


def test_retry_gives_up_at_the_deadline_with_the_last_error() -> None:
    clock = FakeClock()
    fn = failing(10_000, OSError(REFUSED), clock, cost_s=1.0)
    with pytest.raises(OSError, match="curlCode: 7"):
        retry.retry_call(fn, max_s=20, sleep=clock.sleep, clock=lambda: clock.now)
    assert 20 <= clock.now <= 21, "no try starts after max_s: the bound is max_s plus one try"
    assert max(clock.waits) <= 8.0


def test_permanent_error_fails_at_once() -> None:
    clock = FakeClock()
    fn = failing(1, OSError("AWS Error ACCESS_DENIED during PutObject operation"), clock)
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        retry.retry_call(fn, max_s=60, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.waits == []


def test_local_files_are_not_retried(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    loc = storage.open_location(str(tmp_path / "file" / "under"))
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot write") as info:
        storage.write_bytes(loc, b"data")
    assert time.monotonic() - started < 1 and "tried" not in str(info.value)


def test_retry_bound_travels_with_the_file_system_into_ray_workers() -> None:
    import pickle

    loc = storage.open_location("s3://b/k", StorageConfig(endpoint="http://127.0.0.1:9", retry_max_s=7))
    assert loc.join("x").retry_max_s == 7
    again = pickle.loads(pickle.dumps(loc.fs))
    assert isinstance(again, retry.RetryingS3FileSystem) and again.retry_max_s == 7


# -- against SeaweedFS through the proxy -----------------------------------------------------------


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    url = urlparse(s3_server.endpoint)
    p = FaultProxy(url.hostname or "127.0.0.1", int(url.port or 80))
    yield p
    p.close()


def proxied(proxy: FaultProxy, uri: str, **extra: Any) -> storage.Location:
    cfg = {"endpoint": proxy.endpoint, "retries": 3, "connect_timeout_s": 1, "request_timeout_s": 5, **extra}
    return storage.open_location(uri, StorageConfig.model_validate(cfg))


@pytest.mark.faults
def test_every_verb_rides_out_a_short_outage(s3_bucket: str, proxy: FaultProxy) -> None:
    root = proxied(proxy, f"{s3_bucket}/verbs", retry_max_s=30)
    table = pa.table({"id": [str(i) for i in range(100)]})
    storage.write_table(root.join("t.parquet"), table)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("write", lambda: storage.write_bytes(root.join("a.json"), b"{}")),
        ("exists", lambda: storage.exists(root.join("a.json"))),
        ("list", lambda: storage.list_files(root, suffix="")),
        ("read", lambda: storage.read_bytes(root.join("a.json"))),
        ("read_table", lambda: storage.read_table(root.join("t.parquet"))),
        ("open_input_file", lambda: pq.ParquetFile(root.fs.open_input_file(root.join("t.parquet").path)).read()),
        ("delete", lambda: storage.delete_file(root.join("a.json"))),
    ]
    for name, step in steps:
        proxy.outage(2.0)
        started = time.monotonic()
        step()
        took = time.monotonic() - started
        print(f"{name}: succeeded {took:.1f}s into a 2 s outage")
        assert took >= 1.5, f"{name} did not meet the outage"
    opened = root.fs.open_input_file(root.join("t.parquet").path)  # then reads of an open file fail
    proxy.outage(2.0)
    started = time.monotonic()
    assert pq.ParquetFile(opened).read().equals(table)
    assert time.monotonic() - started >= 1.5, "reading an open file did not meet the outage"
    assert storage.read_table(root.join("t.parquet")).equals(table)
    assert not storage.exists(root.join("a.json"))


@pytest.mark.faults
def test_denied_access_is_not_retried(s3_bucket: str, proxy: FaultProxy) -> None:
    loc = proxied(proxy, f"{s3_bucket}/x", retry_max_s=30, access_key="nobody", secret_key="wrong-secret-0123")
    started = time.monotonic()
    with pytest.raises(StorageError, match="access was denied") as info:
        storage.write_bytes(loc, b"x")
    assert time.monotonic() - started < 10 and "tried" not in str(info.value)
    assert "wrong-secret-0123" not in str(info.value)


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
    rows = (
        read_folder(out, "train", ["id", "input_ids"]).to_pylist()
        + read_folder(out, "val", ["id", "input_ids"]).to_pylist()
    )
    keys = [(r["id"], tuple(r["input_ids"])) for r in rows]
    assert len(keys) == len(set(keys)), "no chunk written twice"
    assert storage.exists(storage.open_location(out).join("_SUCCESS"))


def outage_run(
    s3_server: S3Server, s3_bucket: str, proxy: FaultProxy, tmp_path: Path, *, outage_s: float, retry_max_s: float
) -> tuple[int, Path, list[str], str, float, list[float]]:
    """Preprocess through the proxy, cutting S3 for `outage_s` once 2 units are committed."""
    ids, _ = corpus_with_duplicates(tmp_path / "in")
    upload(tmp_path / "in", f"{s3_bucket}/corpus")
    out = f"{s3_bucket}/dataset"
    storage_cfg = {
        "endpoint": proxy.endpoint,
        "retries": 3,
        "connect_timeout_s": 1,
        "request_timeout_s": 5,
        "retry_max_s": retry_max_s,
    }
    spec = spec_for(f"{s3_bucket}/corpus", out, storage=storage_cfg)
    spec["input"]["rows_per_unit"] = 20
    path = write_spec(tmp_path / "s.yaml", spec)
    fault_at: list[float] = []

    def cut() -> None:
        fault_at.append(time.monotonic())
        proxy.outage(outage_s)

    when_committed(s3_server, s3_bucket.removeprefix("s3://"), "dataset/_work/clean/", 2, cut)
    code = main(["preprocess", str(path)])
    ended = time.monotonic()
    assert fault_at, "the outage never happened: the job finished before 2 units were committed"
    return code, path, ids, out, ended, fault_at


@pytest.mark.faults
def test_s3_outage_of_6s_during_writes_is_ridden_out_without_a_rerun(
    ray_cluster: str,
    s3_server: S3Server,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, ids, out, ended, fault_at = outage_run(s3_server, s3_bucket, proxy, tmp_path, outage_s=6.0, retry_max_s=60)
    err = capsys.readouterr().err
    print(f"6 s outage, retry_max_s 60: exit {code}, ended {ended - fault_at[0]:.1f}s after the outage began")
    assert code == 0, err[-2000:]
    assert ended - fault_at[0] >= 6.0, "the job must have waited for the server to come back"
    assert_reconciles(out, ids)


@pytest.mark.faults
def test_s3_outage_longer_than_the_bound_fails_clearly_then_rerun_loses_and_duplicates_nothing(
    ray_cluster: str,
    s3_server: S3Server,
    s3_bucket: str,
    proxy: FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outage_s, bound_s = 25.0, 3.0
    code, path, ids, out, ended, fault_at = outage_run(
        s3_server, s3_bucket, proxy, tmp_path, outage_s=outage_s, retry_max_s=bound_s
    )
    err = capsys.readouterr().err
    print(
        f"{outage_s:.0f} s outage, retry_max_s {bound_s:g}: exit {code} after {ended - fault_at[0]:.1f}s: "
        f"{err.strip().splitlines()[-1:]}"
    )
    assert code == 1 and "Traceback" not in err, err[-2000:]
    assert "cannot" in err and "S3 endpoint cannot be reached" in err, err[-2000:]
    # retry_max_s, plus one try (3 x (connect 1 s + backoff)), plus the job winding down on a busy machine
    assert ended - fault_at[0] < outage_s, "it must fail within its bound, not wait for the server"
    proxy.wait_serving(timeout=outage_s + 10)  # the server is back
    assert not storage.exists(storage.open_location(out).join("_SUCCESS"))
    assert main(["preprocess", str(path)]) == 0
    assert_reconciles(out, ids)


@pytest.mark.faults
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


@pytest.mark.faults
def test_s3_endpoint_that_never_answers_fails_within_the_configured_bound(
    s3_bucket: str, proxy: FaultProxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.blackhole = True  # connections are accepted, requests swallowed
    storage_cfg = {
        "endpoint": proxy.endpoint,
        "retries": 2,
        "connect_timeout_s": 1,
        "request_timeout_s": 2,
        "retry_max_s": 4,
    }
    spec = spec_for(f"{s3_bucket}/corpus", f"{s3_bucket}/dataset", storage=storage_cfg)
    started = time.monotonic()
    code = main(["preprocess", str(write_spec(tmp_path / "s.yaml", spec))])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    print(f"black hole: exit {code} after {elapsed:.1f}s (retries=2, request_timeout_s=2, retry_max_s=4)")
    assert code == 1 and "S3 endpoint cannot be reached" in err and f"{s3_bucket}/corpus" in err, err
    assert elapsed < 4 + 2 * (2 + 1) + 10, "bounded by retry_max_s + one try of retries x (timeout + backoff)"
