"""The run report: rendered in headless Chromium from a tiny demo run; every section present, no broken image.

The Chromium test skips, saying why, where Debian's `chromium` is not installed (apt-get install chromium).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import DemoRun
from tests.support.datasets import run_cli
from vaelm.report import write_report

pytestmark = pytest.mark.timeout(600)

SECTIONS = {
    "summary": "Summary",
    "funnel": "Preprocessing funnel",
    "training": "Training curves",
    "latent": "Latent space",
    "scores": "Document scores",
    "samples": "Generated samples",
    "interpolations": "Interpolations",
    "classification": "Classification",
    "provenance": "Provenance",
}
IMAGES = ["preprocessing funnel", "training curves", "latent space", "score histogram", "confusion matrix"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium)")
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def section_bodies(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([a-z]+)">(.*?)</section>', html, re.S))


def test_report_renders_in_headless_chromium(tiny_demo: DemoRun, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run_cli("report", str(tiny_demo.workdir), "--out", str(out))
    assert result.returncode == 0 and result.stdout.strip() == str(out), result.stderr
    dom = chromium("--dump-dom", out.as_uri(), profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for key, title in SECTIONS.items():
        assert re.search(rf'<section id="{key}"><h2>{re.escape(title)}</h2>', dom.stdout), f"section {title!r} missing"
    assert "Not run" not in dom.stdout and "Could not be rendered" not in dom.stdout
    images = re.findall(r'<img alt="([^"]*)" src="([^"]*)"', dom.stdout)
    assert sorted(alt for alt, _ in images) == sorted(IMAGES), [alt for alt, _ in images]
    for alt, src in images:
        assert_png(src, alt)
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,4000", out.as_uri(), profile=tmp_path / "p2")
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "no screenshot"


def assert_png(src: str, alt: str) -> None:
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), f"image {alt!r} is not an inline PNG: {src[:60]}"
    data = base64.b64decode(src[len(prefix) :], validate=True)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # raises on a truncated or corrupt PNG
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100, (alt, image.size)


def test_report_of_an_empty_run_says_not_run_in_every_section(tmp_path: Path) -> None:
    path = write_report(str(tmp_path))
    html = Path(path).read_text(encoding="utf-8")
    bodies = section_bodies(html)
    assert list(bodies) == list(SECTIONS)
    for key in SECTIONS:
        if key not in ("summary", "provenance"):
            assert "Not run:" in bodies[key], key
    assert "<img" not in html and "http://" not in html and "https://" not in html


def test_report_of_a_partial_run_shows_what_ran(tiny_demo: DemoRun, tmp_path: Path) -> None:
    run = tmp_path / "partial"
    for folder in ("dataset", "model"):
        shutil.copytree(tiny_demo.workdir / folder, run / folder)
    (run / "model" / "training" / "metrics.jsonl").unlink()
    bodies = section_bodies(Path(write_report(str(run))).read_text(encoding="utf-8"))
    assert "Not run" not in bodies["funnel"] and "<img" in bodies["funnel"]
    assert "Not run: " in bodies["training"]  # the metric history is gone
    for key in ("latent", "scores", "samples", "interpolations", "classification"):
        assert "Not run: " in bodies[key], key
