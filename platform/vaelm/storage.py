"""One way to reach data: local paths and s3:// URIs, through pyarrow file systems.

`open_location(uri, storage)` gives a `Location` (file system + path). Everything else in vaelm
reads and writes through it, so local disk and S3 behave the same. The S3 endpoint is always passed
explicitly (pyarrow ignores AWS_ENDPOINT_URL). Credentials never appear in messages: errors are
scrubbed of the secret values before they are raised.

S3 calls that fail for a transient reason (connection refused or reset, timeouts, 5xx, SlowDown) are
tried again with exponential backoff in seconds and jitter, for at most `storage.retry_max_s`, so a
server restart is ridden out; auth, permission and not-found errors fail at once. Every verb here is
idempotent as a whole (an S3 object is written by one PUT of the whole content, or a multipart upload
that only becomes visible when complete), so a verb is retried as a unit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vaelm.config.common import StorageConfig
from vaelm.errors import StorageError
from vaelm.retry import RetryingS3FileSystem, Tries, retry_call


@dataclass(frozen=True)
class Location:
    """A file system and a path on it; `uri` is how users wrote (or would write) it."""

    fs: pafs.FileSystem
    path: str
    uri: str
    secrets: tuple[str, ...] = ()
    retry_max_s: float = 0.0
    """Seconds within which transient S3 errors are tried again (0: no retries here, local files)."""

    def join(self, *parts: str) -> Location:
        sep = "" if self.uri.endswith("/") else "/"
        rel = "/".join(p.strip("/") for p in parts)
        return dataclasses.replace(self, path=posixpath.join(self.path, rel), uri=f"{self.uri}{sep}{rel}")

    def at(self, entry: FileEntry) -> Location:
        """The Location of a file found by `list_files` under this one (same file system)."""
        return dataclasses.replace(self, path=entry.path, uri=entry.uri)

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def open_location(uri: str, storage: StorageConfig | None = None) -> Location:
    """Resolve a local path or s3://bucket/key URI to a Location."""
    if not is_s3(uri):
        local = pafs.LocalFileSystem()
        path = posixpath.abspath(uri) if not uri.startswith("/") else uri
        return Location(local, path.rstrip("/") or "/", uri)
    cfg = (storage or StorageConfig()).resolved()
    rest = uri.removeprefix("s3://").strip("/")
    if not rest:
        raise StorageError(f"'{uri}' names no bucket; write s3://BUCKET/PREFIX")
    return Location(s3_filesystem(cfg), rest, uri.rstrip("/"), tuple(cfg.secret_values()), cfg.retry_max_s)


def s3_filesystem(cfg: StorageConfig) -> pafs.S3FileSystem:
    """A pyarrow S3FileSystem for a resolved StorageConfig, with bounded timeouts and retries.

    pyarrow's own retry strategy (`storage.retries` attempts, backoff in milliseconds) bridges blips;
    files opened for reading from Python also ride out outages of up to `storage.retry_max_s`.
    """
    kwargs: dict[str, Any] = {
        "region": cfg.region or "us-east-1",
        "connect_timeout": cfg.connect_timeout_s,
        "request_timeout": cfg.request_timeout_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.retries),
        "allow_bucket_creation": True,
    }
    if cfg.endpoint:
        scheme, _, host = cfg.endpoint.partition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    if cfg.access_key and cfg.secret_key:
        kwargs.update(access_key=cfg.access_key.get_secret_value(), secret_key=cfg.secret_key.get_secret_value())
    return RetryingS3FileSystem(retry_max_s=cfg.retry_max_s, **kwargs)


# -- retries ---------------------------------------------------------------------------------------

T = TypeVar("T")


def _retrying(loc: Location, verb: str, fn: Callable[[], T]) -> T:
    """Run one verb on `loc`: S3 calls retried within loc.retry_max_s, errors made clear and scrubbed."""
    tries = Tries()
    with storage_errors(loc, verb, tries=tries):
        return retry_call(fn, max_s=loc.retry_max_s if loc.is_s3 else 0.0, tries=tries)


# -- errors ----------------------------------------------------------------------------------------

_HINTS = (
    (
        ("curlCode: 7", "Couldn't connect", "Could not connect", "connection refused", "curlCode: 28"),
        "the S3 endpoint cannot be reached; check storage.endpoint or $VAELM_S3_ENDPOINT and that the server is up",
    ),
    (
        (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "ACCESS_DENIED",
            "SIGNATURE_DOES_NOT_MATCH",
            "INVALID_ACCESS_KEY",
            "Forbidden",
            "403",
        ),
        "access was denied; check $VAELM_S3_ACCESS_KEY / $VAELM_S3_SECRET_KEY (or the IAM role) and the bucket policy",
    ),
    (("NoSuchBucket", "bucket does not exist"), "the bucket does not exist; create it or fix the URI"),
    (("No space left",), "the disk is full; free space or write elsewhere"),
    (("Permission denied",), "permission denied on the local path; choose a writable output"),
    (
        ("Read-only file system", "Not a directory"),
        "the local path is on a read-only file system or lies under a regular file; choose a writable output",
    ),
)


def scrub(message: str, secrets: tuple[str, ...] | list[str]) -> str:
    """Replace every secret value in a message with ***."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


@contextlib.contextmanager
def storage_errors(loc: Location, verb: str, *, tries: Tries | None = None) -> Iterator[None]:
    """Turn OSErrors from pyarrow into StorageError naming the URI, the cause and a fix (and how long
    it was retried, when it was)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raw = scrub(str(exc), loc.secrets)
        hint = next((h for keys, h in _HINTS if any(k.lower() in raw.lower() for k in keys)), None)
        detail = raw.splitlines()[0][:300] if raw else type(exc).__name__
        msg = f"cannot {verb} {loc.uri}: {detail}"
        msg = f"{msg}; {hint}" if hint else msg
        if tries is not None and tries.count > 1:
            waited = time.monotonic() - tries.started
            msg += f" (tried {tries.count} times over {waited:.0f} s; storage.retry_max_s is {loc.retry_max_s:g})"
        raise StorageError(msg) from None


# -- verbs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One input file with what identifies its content for the manifest's fingerprint."""

    uri: str
    path: str
    size: int
    mtime_ns: int | None


def exists(loc: Location) -> bool:
    return _retrying(loc, "check", lambda: loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound)


def list_files(loc: Location, *, suffix: str = ".parquet") -> list[FileEntry]:
    """Files under `loc` (or `loc` itself if it is a file), sorted; names starting with _ or . skipped."""
    infos = _retrying(loc, "list", lambda: _infos(loc))
    files = [i for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)]
    files = [i for i in files if not _hidden(posixpath.relpath(i.path, loc.path))]
    return sorted((_entry(loc, i) for i in files), key=lambda e: e.uri)


def _infos(loc: Location) -> list[pafs.FileInfo]:
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.File:
        return [info]
    if info.type == pafs.FileType.NotFound:
        return []
    return list(loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)))


def _hidden(relpath: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relpath.split("/") if part not in ("", "."))


def _entry(root: Location, info: pafs.FileInfo) -> FileEntry:
    rel = posixpath.relpath(info.path, root.path)
    uri = root.uri if rel == "." else root.join(rel).uri
    mtime = info.mtime_ns if info.mtime_ns is not None else None
    return FileEntry(uri=uri, path=info.path, size=int(info.size or 0), mtime_ns=mtime)


def read_bytes(loc: Location) -> bytes:
    # S3: the RetryingS3FileSystem retries the open and the read itself
    with storage_errors(loc, "read"), loc.fs.open_input_stream(loc.path) as f:
        return bytes(f.read())


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole object; readers never see a partial one (local: temp file + rename; S3: one PUT, or
    a multipart upload that appears only when complete, so writing again after a failure is safe)."""
    if loc.is_s3:
        _retrying(loc, "write", lambda: _put(loc, data))
        return
    with storage_errors(loc, "write"):
        _ensure_parent(loc)
        tmp = f"{loc.path}.tmp-{uuid.uuid4().hex[:8]}"
        with loc.fs.open_output_stream(tmp) as f:
            f.write(data)
        loc.fs.move(tmp, loc.path)


def _put(loc: Location, data: bytes) -> None:
    with loc.fs.open_output_stream(loc.path) as f:
        f.write(data)


def read_json(loc: Location) -> Any:
    return json.loads(read_bytes(loc))


def write_json(loc: Location, value: Any) -> None:
    write_bytes(loc, (json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n").encode())


def write_table(loc: Location, table: pa.Table) -> None:
    """Write a Parquet file atomically (zstd, dictionary off for token lists)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes(loc, sink.getvalue().to_pybytes())


def read_table(loc: Location, *, columns: list[str] | None = None) -> pa.Table:
    return _retrying(loc, "read", lambda: pq.read_table(loc.path, filesystem=loc.fs, columns=columns))


def delete_tree(loc: Location) -> None:
    """Delete everything under `loc` (a directory or prefix). Missing is fine."""
    _retrying(loc, "delete", lambda: _delete_tree(loc))


def _delete_tree(loc: Location) -> None:
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.Directory:
        loc.fs.delete_dir(loc.path)
    elif info.type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


def delete_file(loc: Location) -> None:
    """Delete one file. Missing is fine (also when an earlier try deleted it but its answer was lost)."""
    with contextlib.suppress(FileNotFoundError):
        _retrying(loc, "delete", lambda: loc.fs.delete_file(loc.path))


def _ensure_parent(loc: Location) -> None:
    parent = posixpath.dirname(loc.path)
    if parent and not loc.is_s3:
        loc.fs.create_dir(parent, recursive=True)


def check_writable(loc: Location) -> None:
    """Fail early, with a clear error, if the output cannot be written (denied, unreachable, full)."""
    probe = loc.join(f"_probe-{uuid.uuid4().hex[:8]}")
    if loc.is_s3:
        bucket = loc.path.split("/", 1)[0]
        _retrying(loc, "create the bucket of", lambda: loc.fs.create_dir(bucket))
    write_bytes(probe, b"ok")
    delete_file(probe)
