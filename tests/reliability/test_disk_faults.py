"""Local disk faults on a job's output: a path that cannot be a directory, a read-only file system, and a
disk that fills up in the middle of the job. Each is exit 1 with a clear message and no `_SUCCESS`; a full
disk, once space is freed, is finished by a rerun with every input id once.

Tests run as root, which ignores file modes, so "read-only" and "full" are real mounts (a read-only bind
mount, a tiny tmpfs); where mounting is not permitted those two skip and say so."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_preprocess import corpus_with_duplicates, spec_for
from tests.support.datasets import dataset_ids, run_cli, write_spec
from vaelm.cli import main

pytestmark = pytest.mark.timeout(300)


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); needs CAP_SYS_ADMIN")


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[list[Path]]:
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def assert_no_trace(stderr: str) -> None:
    """No Python traceback and no dump of unretrieved Ray task errors in what the user sees."""
    for sign in ("Traceback", "Unhandled error"):
        assert sign not in stderr, stderr[-4000:]


def no_success_marker(root: Path) -> bool:
    return not any(root.rglob("_SUCCESS"))


def test_output_under_a_regular_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus_with_duplicates(tmp_path / "in")
    (tmp_path / "plain-file").write_text("not a directory")
    spec = spec_for(str(tmp_path / "in"), str(tmp_path / "plain-file" / "dataset"))
    assert main(["preprocess", str(write_spec(tmp_path / "s.yaml", spec))]) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and "plain-file/dataset" in err and "Not a directory" in err, err
    assert "choose a writable output" in err, err
    assert no_success_marker(tmp_path)


def test_read_only_output_is_a_clear_error(
    tmp_path: Path, mounted: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    corpus_with_duplicates(tmp_path / "in")
    ro = tmp_path / "ro"
    ro.mkdir()
    mount("--bind", "-o", "ro", str(ro), str(ro))
    mounted.append(ro)
    spec = spec_for(str(tmp_path / "in"), str(ro / "dataset"))
    assert main(["preprocess", str(write_spec(tmp_path / "s.yaml", spec))]) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and "Read-only file system" in err and "choose a writable output" in err, err
    assert no_success_marker(ro)


@pytest.mark.faults
def test_disk_full_midway_is_a_clear_error_and_rerun_after_freeing_space_completes(
    ray_cluster: str, tmp_path: Path, mounted: list[Path]
) -> None:
    ids, _ = corpus_with_duplicates(tmp_path / "in")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk))  # room for the probe, not for the dataset
    mounted.append(disk)
    out = disk / "dataset"
    spec = write_spec(tmp_path / "s.yaml", spec_for(str(tmp_path / "in"), str(out)))

    full = run_cli("preprocess", str(spec))
    assert full.returncode == 1, full.stderr[-3000:]
    assert "No space left on device" in full.stderr and "the disk is full" in full.stderr, full.stderr[-3000:]
    assert_no_trace(full.stderr)
    assert no_success_marker(disk), "a half-written dataset must never be marked complete"
    assert (out / "_work").is_dir(), "the job got past its start before the disk filled"

    mount("-o", "remount,size=64m", str(disk))  # space freed
    rerun = run_cli("preprocess", str(spec))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    train, val, rejects = dataset_ids(str(out))
    assert sorted(train + val + rejects) == sorted(ids)
