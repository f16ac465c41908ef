"""Retries of transient storage errors: which errors are worth another try, backoff with jitter, a
bounded retry loop, and a pyarrow S3 file system whose Python-opened files ride out outages.

Used by `vaelm.storage` (every verb there retries as a whole within `storage.retry_max_s`); no I/O of
its own beyond the calls it is given.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

T = TypeVar("T")

_TRANSIENT = re.compile(
    r"curlCode: (7|18|28|35|52|55|56)\b|NETWORK_CONNECTION|connection (refused|reset)|Could(n't| not) connect"
    r"|timed? ?out|HTTP status 5\d\d|SLOW_?DOWN|SERVICE_?UNAVAILABLE|INTERNAL_?(ERROR|FAILURE)|THROTTL"
    r"|REQUEST_?TIMEOUT|Broken pipe",
    re.IGNORECASE,
)
_PERMANENT = re.compile(
    r"ACCESS_?DENIED|INVALID_?ACCESS_?KEY|SIGNATURE_?DOES_?NOT_?MATCH|Forbidden|HTTP status 40[0-4]"
    r"|NO_?SUCH_?(BUCKET|KEY)|Permission denied|No space left|Read-only file system|Not a directory",
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """Whether an error may go away by itself (server restarting, network, overload): worth another try.
    Auth, permission, not-found and local disk errors never are."""
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if not isinstance(exc, OSError | pa.ArrowException):
        return False
    message = str(exc)
    return not _PERMANENT.search(message) and bool(_TRANSIENT.search(message))


@dataclass
class Tries:
    """How many attempts one call took, and since when (for the message when they run out)."""

    count: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)


def backoff_s(attempt: int, *, base_s: float = 0.5, cap_s: float = 8.0) -> float:
    """Seconds to wait after failed attempt `attempt` (0-based): exponential, capped, with jitter
    (between half and all of base x 2^attempt), so that many workers do not retry in step."""
    return min(cap_s, base_s * 2**attempt) * (0.5 + 0.5 * random.random())


def retry_call(
    fn: Callable[[], T],
    *,
    max_s: float,
    tries: Tries | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`fn()`, tried again after transient errors with backoff until `max_s` seconds have passed.

    The last error is raised as it is; no attempt starts after the deadline, so the whole call takes
    at most `max_s` plus one attempt. `fn` must be safe to repeat (idempotent)."""
    tries = tries if tries is not None else Tries()
    deadline = clock() + max_s
    while True:
        tries.count += 1
        try:
            return fn()
        except Exception as exc:
            remaining = deadline - clock()
            if remaining <= 0 or not is_transient(exc):
                raise
            sleep(min(backoff_s(tries.count - 1), remaining))


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3FileSystem, but files opened for reading from Python ride out transient errors:
    opening and every read are retried within `retry_max_s`. Readers that pyarrow drives from C++
    (datasets, Ray Data) get pyarrow's own retry strategy only; storage's verbs retry as a whole."""

    def __init__(self, *, retry_max_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry_max_s = retry_max_s

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = super().__reduce__()[1][0]  # pyarrow's (S3FileSystem._reconstruct, (kwargs,))
        return _rebuild_retrying, (kwargs, self.retry_max_s)

    def open_input_file(self, path: str) -> pa.NativeFile:
        if self.retry_max_s <= 0:
            return super().open_input_file(path)
        opened = retry_call(lambda: pafs.S3FileSystem.open_input_file(self, path), max_s=self.retry_max_s)
        return pa.PythonFile(_RetryingReader(opened, self.retry_max_s), mode="r")

    def open_input_stream(self, path: str, compression: str | None = "detect", buffer_size: int | None = None) -> Any:
        if self.retry_max_s <= 0 or compression not in (None, "detect") or buffer_size:
            return super().open_input_stream(path, compression=compression, buffer_size=buffer_size)
        return self.open_input_file(path)


def _rebuild_retrying(kwargs: dict[str, Any], retry_max_s: float) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(retry_max_s=retry_max_s, **kwargs)


class _RetryingReader:
    """A seekable read-only file object over an open S3 file; each read is retried (used via PythonFile)."""

    def __init__(self, opened: pa.NativeFile, max_s: float) -> None:
        self._file = opened
        self._max_s = max_s
        self._size = opened.size()
        self._pos = 0
        self.closed = False

    def read(self, nbytes: int | None = -1) -> bytes:
        left = self._size - self._pos
        n = left if nbytes is None or nbytes < 0 else min(nbytes, left)
        if n <= 0:
            return b""
        data: bytes = retry_call(lambda: self._file.read_at(n, self._pos), max_s=self._max_s)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self._file.close()
