"""The kustomize overlays render, validate against their schemas, and keep the safety rules."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from tests.k8s.support import OVERLAYS, REPO, render

RAY_KINDS = ("RayJob", "RayCluster", "RayCronJob")
K8S_VERSION = "1.32.0"  # the oldest release these manifests target (CronJob timeZone is GA since 1.27)
NIGHTLY = REPO / "k8s" / "components" / "nightly-cronjob" / "rayjob-classify-nightly.yaml"


def objects(rendered: dict[str, list[dict[str, Any]]], *kinds: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for overlay, docs in rendered.items():
        for doc in docs:
            if not kinds or doc["kind"] in kinds:
                yield f"{overlay}/{doc['kind']}/{doc['metadata'].get('name')}", doc


def errors(schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def nightly_rayjob() -> dict[str, Any]:
    """The RayJob the nightly CronJob creates, with its run-time image placeholders filled."""
    text = NIGHTLY.read_text().replace("@VAELM_IMAGE@", "vaelm:0.1.0")
    return yaml.safe_load(text.replace("@VAELM_GPU_IMAGE@", "vaelm-gpu:0.1.0"))


# ---- rendering and schemas ---------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_expected_kinds(rendered, overlay):
    kinds = {doc["kind"] for doc in rendered[overlay]}
    assert {"RayCluster", "RayJob", "ServiceAccount", "NetworkPolicy", "ConfigMap"} <= kinds
    jobs = {d["metadata"]["name"] for d in rendered[overlay] if d["kind"] == "RayJob"}
    assert jobs == {"vaelm-preprocess", "vaelm-train", "vaelm-generate", "vaelm-classify"}
    nightly = {"dev": "RayCronJob", "prod": "CronJob"}[overlay]
    assert nightly in kinds, f"{overlay} has no nightly {nightly}"


def test_base_renders(kubectl):
    assert render(REPO / "k8s" / "base")


def test_ray_objects_match_the_crd_schemas_with_unknown_fields_forbidden(rendered, crd_schemas):
    checked = 0
    for where, doc in objects(rendered, *RAY_KINDS):
        assert doc["apiVersion"] == "ray.io/v1", where
        assert not errors(crd_schemas[doc["kind"]], doc), (where, errors(crd_schemas[doc["kind"]], doc))
        checked += 1
    assert checked >= 2 * 5


def test_nightly_rayjob_in_the_configmap_matches_the_crd_schema(crd_schemas):
    assert not errors(crd_schemas["RayJob"], nightly_rayjob())


def test_nightly_cronjob_and_raycronjob_run_the_same_rayjob():
    raycron = REPO / "k8s" / "components" / "nightly-raycronjob" / "raycronjob-classify-nightly.yaml"
    assert nightly_rayjob()["spec"] == yaml.safe_load(raycron.read_text())["spec"]["jobTemplate"]


@pytest.mark.parametrize(
    "path, bad_key",
    [
        (("spec",), "shutdownAfterJobFinish"),  # misspelt top-level field
        (("spec", "rayClusterSpec", "workerGroupSpecs", 0), "minReplica"),  # inside the cluster spec
        (("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0), "securityContex"),
    ],
)
def test_a_misspelt_field_fails_validation(crd_schemas, path, bad_key):
    doc = copy.deepcopy(nightly_rayjob())
    node = doc
    for step in path:
        node = node[step]
    node[bad_key] = True
    found = errors(crd_schemas["RayJob"], doc)
    assert any(bad_key in e for e in found), f"{bad_key} was accepted: {found}"


def test_a_wrong_type_fails_validation(crd_schemas):
    doc = copy.deepcopy(nightly_rayjob())
    doc["spec"]["ttlSecondsAfterFinished"] = "ten minutes"
    assert errors(crd_schemas["RayJob"], doc)


def test_builtin_kinds_validate_with_kubernetes_validate(rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    checked = 0
    for where, doc in objects(rendered):
        if doc["kind"] in RAY_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")
        checked += 1
    assert checked >= 8


def test_kubernetes_validate_rejects_a_misspelt_builtin_field(rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    [cron] = [d for d in rendered["prod"] if d["kind"] == "CronJob"]
    bad = copy.deepcopy(cron)
    bad["spec"]["schedul"] = bad["spec"]["schedule"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


# ---- safety rules ------------------------------------------------------------------------


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec an object will create, with a label for messages."""
    kind, spec = doc["kind"], doc["spec"]
    if kind == "RayCronJob":
        spec = spec["jobTemplate"]
    if kind in ("RayJob", "RayCronJob"):
        if "submitterPodTemplate" in spec:
            yield "submitter", spec["submitterPodTemplate"]["spec"]
        spec = spec["rayClusterSpec"]
    if kind in ("RayJob", "RayCronJob", "RayCluster"):
        yield "head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"worker:{group['groupName']}", group["template"]["spec"]
    if kind == "CronJob":
        yield "cronjob", spec["jobTemplate"]["spec"]["template"]["spec"]


def all_pods(rendered):
    for where, doc in objects(rendered, "RayJob", "RayCluster", "RayCronJob", "CronJob"):
        for role, pod in pod_specs(doc):
            yield f"{where}/{role}", pod
    for role, pod in pod_specs(nightly_rayjob()):
        yield f"nightly-configmap/{role}", pod


def check_container(where: str, container: dict[str, Any]) -> None:
    sec = container.get("securityContext", {})
    assert sec.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false"
    assert sec.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities must drop ALL"
    res = container.get("resources", {})
    assert {"cpu", "memory"} <= set(res.get("limits", {})), f"{where}: cpu and memory limits required"
    assert res.get("requests") == res.get("limits"), f"{where}: requests must equal limits"


def test_every_pod_runs_non_root_and_every_container_is_locked_down(rendered):
    pods = list(all_pods(rendered))
    assert len(pods) > 20
    for where, pod in pods:
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        for container in pod["containers"] + pod.get("initContainers", []):
            check_container(f"{where}/{container['name']}", container)


def test_autoscaler_sidecars_are_locked_down_too(rendered):
    for where, doc in objects(rendered, "RayJob", "RayCluster", "RayCronJob"):
        spec = doc["spec"].get("jobTemplate", doc["spec"])
        cluster = spec.get("rayClusterSpec", spec)
        assert cluster["enableInTreeAutoscaling"] is True, where
        check_container(f"{where}/autoscaler", cluster["autoscalerOptions"])


def test_the_safety_check_catches_a_missing_limit():
    bad = {
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    }
    with pytest.raises(AssertionError, match="requests must equal limits"):
        check_container("synthetic", bad)


def test_rayjobs_clean_up_after_themselves(rendered):
    rayjobs = [(w, d["spec"]) for w, d in objects(rendered, "RayJob")]
    rayjobs += [(w, d["spec"]["jobTemplate"]) for w, d in objects(rendered, "RayCronJob")]
    rayjobs.append(("nightly-configmap", nightly_rayjob()["spec"]))
    for where, spec in rayjobs:
        assert spec["shutdownAfterJobFinishes"] is True, where
        assert spec["ttlSecondsAfterFinished"] > 0, where
        assert spec["activeDeadlineSeconds"] > 0, where
        assert spec["backoffLimit"] >= 0, where
        assert spec["entrypoint"].startswith("vaelm run /specs/"), where


def test_gpu_group_scales_from_zero_and_dev_has_none(rendered):
    for where, doc in objects(rendered, "RayCluster"):
        groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
        if where.startswith("dev/"):
            assert "gpu" not in groups, where
        else:
            assert groups["gpu"]["minReplicas"] == 0
            gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert gpu_limits["nvidia.com/gpu"] == "1"


def test_no_pod_runs_the_unpinned_or_latest_image(rendered):
    for where, pod in all_pods(rendered):
        for container in pod["containers"]:
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: {image}"


def test_nightly_cronjob_creates_rayjobs_with_the_rendered_images(rendered):
    [cron] = [d for d in rendered["prod"] if d["kind"] == "CronJob"]
    env = {
        e["name"]: e.get("value")
        for e in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    [classify] = [d for d in rendered["prod"] if d["kind"] == "RayJob" and d["metadata"]["name"] == "vaelm-classify"]
    cluster = classify["spec"]["rayClusterSpec"]
    assert env["VAELM_IMAGE"] == cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert env["VAELM_GPU_IMAGE"] == cluster["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["image"]


def test_scheduler_role_may_only_create_rayjobs(rendered):
    [role] = [d for d in rendered["prod"] if d["kind"] == "Role"]
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]
    [binding] = [d for d in rendered["prod"] if d["kind"] == "RoleBinding"]
    [cron] = [d for d in rendered["prod"] if d["kind"] == "CronJob"]
    sa = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "vaelm"}]


def test_ray_pods_use_the_irsa_service_account_in_prod(rendered):
    [sa] = [d for d in rendered["prod"] if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "vaelm-ray"]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for where, pod in all_pods(rendered):
        if "cronjob" not in where:
            assert pod["serviceAccountName"] == "vaelm-ray", where


def test_s3_keys_come_only_from_an_optional_secret(rendered):
    for where, pod in all_pods(rendered):
        for container in pod["containers"]:
            for env in container.get("env", []):
                if "KEY" in env["name"] or "SECRET" in env["name"] or "TOKEN" in env["name"]:
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    assert ref and "value" not in env, f"{where}: {env['name']} must come from a Secret"
    assert not [d for docs in rendered.values() for d in docs if d["kind"] == "Secret"], "no Secret is rendered"


def test_network_policy_keeps_gcs_and_dashboard_in_the_namespace(rendered):
    for overlay, docs in rendered.items():
        [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"]
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
        assert spec["policyTypes"] == ["Ingress"]
        for rule in spec["ingress"]:
            for peer in rule["from"]:
                if "namespaceSelector" in peer:  # cross-namespace peers get named ports only
                    ports = {p["port"] for p in rule["ports"]}
                    assert not ports & {6379, 10001}, f"{overlay}: GCS/client port opened to {peer}"
                else:
                    assert peer == {"podSelector": {}}, f"{overlay}: unexpected peer {peer}"


def test_specs_configmap_holds_the_jobs_files_verbatim(rendered):
    for overlay, docs in rendered.items():
        [cm] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "vaelm-specs"]
        for key, text in cm["data"].items():
            assert text == (REPO / "jobs" / key).read_text(), f"{overlay}: /specs/{key} differs from jobs/{key}"


def test_dockerfiles_pin_the_ray_version_of_pyproject():
    pyproject = (REPO / "pyproject.toml").read_text()
    [ray_version] = re.findall(r'"ray\[[^\]]*\]==([0-9.]+)"', pyproject)
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (REPO / "deploy" / "docker" / name).read_text()
        [base] = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
        assert base.startswith(f"rayproject/ray:{ray_version}-py311-"), f"{name}: FROM {base}"
        assert re.search(r"^USER\s+1000", text, flags=re.M), f"{name}: must run as the non-root uid 1000"
    for doc in (REPO / "k8s" / "base").glob("ray*.yaml"):
        assert f"rayVersion: {ray_version}" in doc.read_text() or f"rayVersion: '{ray_version}'" in doc.read_text(), doc
