"""Spec sections shared by every job: where data lives, how to reach S3, how to use Ray."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from vaelm.config.base import SpecModel

ENV_ENDPOINT = "VAELM_S3_ENDPOINT"
ENV_REGION = "VAELM_S3_REGION"
ENV_ACCESS_KEY = "VAELM_S3_ACCESS_KEY"
ENV_SECRET_KEY = "VAELM_S3_SECRET_KEY"


class StorageConfig(SpecModel):
    """How to reach object storage. Local paths need none of it."""

    endpoint: str | None = None
    """S3 endpoint URL, e.g. http://127.0.0.1:8333. Falls back to $VAELM_S3_ENDPOINT; empty = AWS."""
    region: str | None = None
    """S3 region. Falls back to $VAELM_S3_REGION, then us-east-1."""
    access_key: SecretStr | None = None
    """Access key. Prefer $VAELM_S3_ACCESS_KEY or an IAM role: keys in a spec file end up in git."""
    secret_key: SecretStr | None = None
    """Secret key. Prefer $VAELM_S3_SECRET_KEY or an IAM role."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Seconds to wait for a connection to the S3 endpoint before a try fails."""
    request_timeout_s: float = Field(default=60.0, gt=0)
    """Seconds to wait for one S3 request before a try fails."""
    retries: int = Field(default=4, ge=1, le=20)
    """Attempts per S3 request inside pyarrow (backoff in milliseconds: bridges blips, not restarts)."""
    retry_max_s: float = Field(default=60.0, ge=0)
    """Seconds during which an S3 operation that failed for a transient reason (connection refused or
    reset, timeout, 5xx, SlowDown) is tried again, with exponential backoff (0.5 s doubling to 8 s,
    jittered): a server restart shorter than this is ridden out. After it, the job fails with the last
    error; the worst case is this plus one try (retries x request_timeout_s). Auth, permission and
    not-found errors are never retried. 0 turns this off."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint_has_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://; write 'http://{value}'")
        return value

    def resolved(self) -> StorageConfig:
        """This config with empty fields filled from the VAELM_S3_* environment variables."""
        env = os.environ
        return self.model_copy(
            update={
                "endpoint": self.endpoint or env.get(ENV_ENDPOINT) or None,
                "region": self.region or env.get(ENV_REGION) or "us-east-1",
                "access_key": self.access_key or _secret(env.get(ENV_ACCESS_KEY)),
                "secret_key": self.secret_key or _secret(env.get(ENV_SECRET_KEY)),
            }
        )

    def secret_values(self) -> list[str]:
        """The secret strings, so that error messages can be scrubbed of them."""
        return [s.get_secret_value() for s in (self.access_key, self.secret_key) if s is not None]


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None


class RayConfig(SpecModel):
    """How the job uses Ray."""

    address: str | None = None
    """Ray cluster address ('auto', 'ray://host:10001'). Empty: $RAY_ADDRESS, else a local Ray started here."""
    num_cpus: int | None = Field(default=None, ge=1)
    """CPUs of a local Ray started by the job (empty = all of this machine's)."""
    object_store_mb: int | None = Field(default=None, ge=64)
    """Object store size of a local Ray started by the job, in MiB (empty = Ray's default)."""
    actor_cpus: float = Field(default=1.0, gt=0)
    """CPUs reserved by each worker actor. Fractions let more actors share a core."""
    max_actors: int | None = Field(default=None, ge=1)
    """Upper bound on worker actors (empty = sized from the cluster's CPUs, leaving room for others)."""
    num_gpus_per_actor: float = Field(default=0.0, ge=0)
    """GPUs reserved by each model actor (bulk jobs); 0 = CPU."""


class InputConfig(SpecModel):
    """The input corpus: Parquet files or prefixes, local or s3://."""

    paths: list[str] = Field(min_length=1)
    """Parquet files or directories/prefixes (searched recursively for *.parquet)."""
    text_column: str = "text"
    """Column holding the document text (string or binary)."""
    id_column: str | None = "id"
    """Column holding a unique document id. When the column is absent, ids are derived from the
    source file and row number (stable across runs)."""
    label_column: str | None = None
    """Optional column with a class label, carried through for classifier training."""
    passthrough_columns: list[str] = Field(default_factory=list)
    """Other input columns to carry through to the outputs untouched."""
    rows_per_unit: int = Field(default=20_000, ge=1)
    """Rows per unit of work (a unit is a run of row groups of one file); bounds memory per worker."""
    on_corrupt_file: Literal["error", "skip"] = "error"
    """A file that is not readable Parquet: stop with an error, or skip it and record it in the stats."""
