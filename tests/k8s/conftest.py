"""Fixtures for the deployment tests: rendered kustomize overlays and strict CRD schemas.

No Ray, no cluster: everything here is offline. Tests skip, with the reason, where a tool
(kubectl, hadolint) or ../shared/schemas/kuberay is absent.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml

from tests.k8s.support import CRD_FILES, OVERLAYS, REPO, SCHEMAS, render, strict


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not on PATH: cannot render the kustomize overlays (install kubectl >= 1.27)")
    return found


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """Each overlay, rendered once per session: {"dev": [objects], "prod": [objects]}."""
    return {name: render(REPO / "k8s" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def crd_schemas() -> dict[str, dict[str, Any]]:
    """{kind: strict openAPIV3Schema of the served v1 version} from ../shared/schemas/kuberay."""
    if not SCHEMAS.is_dir():
        pytest.skip(f"{SCHEMAS} is absent: the KubeRay CRDs live in ../shared (see ENVIRONMENT.md)")
    schemas = {}
    for kind, name in CRD_FILES.items():
        crd = yaml.safe_load((SCHEMAS / name).read_text())
        [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
        schemas[kind] = strict(version["schema"]["openAPIV3Schema"])
    return schemas
