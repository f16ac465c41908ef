"""Helpers shared by the deployment tests: repo paths, kustomize rendering, strict CRD schemas."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO.parent / "shared" / "schemas" / "kuberay"
OVERLAYS = ("dev", "prod")
CRD_FILES = {
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}
# kubectl kustomize reads the job specs from ../../jobs; see k8s/base/kustomization.yaml.
RENDER = ["kubectl", "kustomize", "--load-restrictor=LoadRestrictionsNone"]


def render(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` one kustomization directory; the parsed objects."""
    proc = subprocess.run([*RENDER, str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which every object that lists `properties` forbids others.

    Objects that declare `additionalProperties` (maps such as labels, rayStartParams) keep it,
    and objects marked `x-kubernetes-preserve-unknown-fields` stay open: that is the CRD saying
    "anything goes here". These CRDs embed the full PodTemplateSpec with its properties, so pod
    templates are checked strictly too; only `metadata` objects without listed properties (the
    top-level ObjectMeta) stay open, as the API server validates those itself.
    """
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out
