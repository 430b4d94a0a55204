"""The deployment agrees with the registry: compose files, Dockerfiles, Prometheus, Grafana, Kubernetes.

The expected services are `aitrading.registry.implemented()`, so a new service folder makes these tests
ask for its compose entry, Dockerfile, scrape job and manifests. The compose files are validated and
merged by `docker-compose config` (Debian's `docker-compose` package, or the `docker compose` plugin);
without either the compose tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from aitrading.registry import REGISTRY, ServiceSpec, implemented, repo_root

ROOT = repo_root()
SERVICES = implemented(ROOT)
BASE, DEV, PROD = ("docker-compose.yml",), ("docker-compose.yml", "docker-compose.dev.yml"), (
    "docker-compose.yml", "docker-compose.prod.yml")
INFRA = ("postgres", "clickhouse", "dragonfly", "nats", "weaviate", "arangodb")
# The registry names infrastructure by protocol; compose names the server that speaks it.
COMPOSE_INFRA = {"postgres": "postgres", "nats": "nats", "redis": "dragonfly", "clickhouse": "clickhouse",
                 "weaviate": "weaviate", "arangodb": "arangodb"}
SECRETS = ("service_client_secret", "admin_password", "signing_key_passphrase", "grafana_admin_password",
           "credentials_key")
SERVICE_IDS = [spec.name for spec in SERVICES]


def urls_by_name() -> dict[str, str]:
    """Every registry service at its own name and port: how services address each other in a network."""
    return {name: f"http://{name}:{spec.port}" for name, spec in REGISTRY.items()}


def test_the_checkout_has_services() -> None:
    assert {"api-gateway", "user-service", "central-hub"} <= set(SERVICE_IDS)


# ---------------------------------------------------------------------------------------------- compose

def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    message = "docker-compose is not installed (apt-get install docker-compose)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + ": CI must validate the compose files")
    pytest.skip(message)


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets")
    for name in SECRETS:
        (folder / name).write_text(f"test-{name}\n")
    return folder


def compose_env(secrets_dir: Path) -> dict[str, str]:
    """A fixed environment: the developer's shell and .env must not change what is checked."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "POSTGRES_PASSWORD": "pg-secret",
        "CLICKHOUSE_PASSWORD": "ch-secret",
        "ARANGO_ROOT_PASSWORD": "arango-secret",
        "ADMIN_EMAIL": "admin@example.com",
        "SECRETS_DIR": str(secrets_dir),
        "TAG": "test",
        "LOG_LEVEL": "INFO",
        "GATEWAY_PORT": "8000",
        "ENVIRONMENT": "compose",
    }


@cache
def _compose_config(files: tuple[str, ...], secrets: str) -> dict[str, Any]:
    args = [*compose_command()]
    for name in files:
        args += ["-f", name]
    result = subprocess.run([*args, "config"], cwd=ROOT, env=compose_env(Path(secrets)), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(args)} config failed:\n{result.stderr}"
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def config(secrets_dir: Path) -> Any:
    def load(files: tuple[str, ...]) -> dict[str, Any]:
        return _compose_config(files, str(secrets_dir))
    return load


@pytest.mark.parametrize("files", [BASE, DEV, PROD], ids=["base", "dev", "prod"])
def test_compose_files_are_valid(files: tuple[str, ...], secrets_dir: Path) -> None:
    args = [*compose_command()]
    for name in files:
        args += ["-f", name]
    result = subprocess.run([*args, "config", "-q"], cwd=ROOT, env=compose_env(secrets_dir),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_prod_refuses_to_start_without_real_passwords(secrets_dir: Path) -> None:
    env = {k: v for k, v in compose_env(secrets_dir).items() if k != "POSTGRES_PASSWORD"}
    result = subprocess.run([*compose_command(), "-f", PROD[0], "-f", PROD[1], "config", "-q"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def target_ports(service: dict[str, Any]) -> set[int]:
    """Container ports a compose service declares (expose and ports, short or long syntax)."""
    ports = {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host ip, container port) of every published port; host ip "" means all interfaces."""
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append((str(entry.get("host_ip", "")), int(entry["target"])))
        else:
            parts = str(entry).split("/")[0].split(":")
            out.append((parts[0] if len(parts) == 3 else "", int(parts[-1])))
    return out


@pytest.mark.parametrize("files", [BASE, DEV, PROD], ids=["base", "dev", "prod"])
@pytest.mark.parametrize("spec", SERVICES, ids=SERVICE_IDS)
def test_every_implemented_service_is_in_compose_on_its_registry_port(
        config: Any, files: tuple[str, ...], spec: ServiceSpec) -> None:
    services = config(files)["services"]
    assert spec.name in services, f"{spec.name} has no entry in {files}"
    service = services[spec.name]
    assert spec.port in target_ports(service)
    assert Path(service["build"]["context"]) == ROOT
    assert service["build"]["dockerfile"] == f"services/{spec.name}/Dockerfile"


@pytest.mark.parametrize("files", [BASE, DEV, PROD], ids=["base", "dev", "prod"])
def test_no_compose_service_claims_another_services_port(config: Any, files: tuple[str, ...]) -> None:
    owner = {spec.port: spec.name for spec in REGISTRY.values()}
    for name, service in config(files)["services"].items():
        for port in target_ports(service):
            assert owner.get(port, name) == name, f"{name} declares port {port} of {owner[port]}"


@pytest.mark.parametrize("files", [BASE, PROD], ids=["base", "prod"])
def test_only_the_gateway_is_published_outside_the_host(config: Any, files: tuple[str, ...]) -> None:
    exposed = {name: [port for host, port in published(service) if host not in ("127.0.0.1", "localhost")]
               for name, service in config(files)["services"].items()}
    assert {name: ports for name, ports in exposed.items() if ports} == {"api-gateway": [8000]}


@pytest.mark.parametrize("spec", SERVICES, ids=SERVICE_IDS)
def test_services_reach_each_other_and_the_infrastructure_by_compose_name(
        config: Any, spec: ServiceSpec) -> None:
    env = config(BASE)["services"][spec.name]["environment"]
    assert env["HOST"] == "0.0.0.0"
    assert env["DATABASE_URL"] == "postgresql+asyncpg://aitrading:pg-secret@postgres:5432/aitrading"
    assert env["NATS_URL"] == "nats://nats:4222"
    assert env["REDIS_URL"] == "redis://dragonfly:6379/0"
    assert env["CLICKHOUSE_URL"].startswith("http://") and "@clickhouse:8123" in env["CLICKHOUSE_URL"]
    assert env["JWKS_URL"] == "http://user-service:8009/.well-known/jwks.json"
    assert json.loads(env["SERVICE_URLS"]) == urls_by_name()
    # An image has no checkout to discover services from: the gateway and the hub read this list.
    assert json.loads(env["DEPLOYED_SERVICES"]) == [s.name for s in SERVICES]


@pytest.mark.parametrize("spec", SERVICES, ids=SERVICE_IDS)
def test_services_wait_until_what_they_need_is_healthy(config: Any, spec: ServiceSpec) -> None:
    depends_on = config(BASE)["services"][spec.name]["depends_on"]
    implemented_names = set(SERVICE_IDS)
    needed = {COMPOSE_INFRA[infra] for infra in spec.infra}
    needed |= {name for name in spec.depends_on if name in implemented_names}
    assert needed <= set(depends_on), f"{spec.name} should wait for {sorted(needed - set(depends_on))}"
    assert all(dep["condition"] == "service_healthy" for dep in depends_on.values())


@pytest.mark.parametrize("name", INFRA)
def test_infrastructure_is_in_compose_with_a_healthcheck(config: Any, name: str) -> None:
    service = config(BASE)["services"][name]
    assert service["healthcheck"]["test"]


def test_infrastructure_uses_the_designed_servers(config: Any) -> None:
    images = {name: config(BASE)["services"][name]["image"] for name in INFRA}
    major = int(re.match(r"postgres:(\d+)", images["postgres"]).group(1))  # type: ignore[union-attr]
    assert major >= 16
    assert images["clickhouse"].startswith("clickhouse/clickhouse-server:")
    assert images["dragonfly"].startswith("docker.dragonflydb.io/dragonflydb/dragonfly:")
    assert images["nats"].startswith("nats:")
    assert images["weaviate"].startswith("semitechnologies/weaviate:")
    assert images["arangodb"].startswith("arangodb:")
    nats = config(BASE)["services"]["nats"]
    assert "--jetstream" in nats["command"]
    assert any(str(v).endswith(":/data:rw") or ":/data" in str(v) for v in nats["volumes"])


@pytest.mark.parametrize("spec", SERVICES, ids=SERVICE_IDS)
def test_dev_override_serves_mounted_sources_with_reload_and_debug_logs(
        config: Any, spec: ServiceSpec) -> None:
    service = config(DEV)["services"][spec.name]
    command = service["command"]
    assert command[:2] == ["uvicorn", f"{spec.package}.main:create_app"]
    assert {"--factory", "--reload"} <= set(command)
    assert command[command.index("--port") + 1] == str(spec.port)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    mounts = " ".join(str(v) for v in service["volumes"])
    assert f"services/{spec.name}/src" in mounts and "shared/src" in mounts
    assert service["environment"]["LOG_LEVEL"] == "DEBUG"
    assert f"/src/services/{spec.name}/src" in service["environment"]["PYTHONPATH"]
    assert spec.port in [port for _, port in published(service)]


@pytest.mark.parametrize("spec", SERVICES, ids=SERVICE_IDS)
def test_prod_override_restarts_limits_and_reads_secrets_from_files(config: Any, spec: ServiceSpec) -> None:
    service = config(PROD)["services"][spec.name]
    assert service["restart"] == "unless-stopped"
    assert service["deploy"]["replicas"] >= 1
    assert service["deploy"]["resources"]["limits"]["memory"]
    assert "service_client_secret" in [s["source"] if isinstance(s, dict) else s for s in service["secrets"]]
    env = service["environment"]
    assert env["SERVICE_CLIENT_SECRET_FILE"] == "/run/secrets/service_client_secret"
    assert env["ENVIRONMENT"] == "production"
    assert not env.get("SERVICE_CLIENT_SECRET"), "a plain variable would win over the secret file"


def test_prod_gives_user_service_its_admin_and_key_secrets(config: Any) -> None:
    env = config(PROD)["services"]["user-service"]["environment"]
    assert env["ADMIN_PASSWORD_FILE"] == "/run/secrets/admin_password"
    assert env["SIGNING_KEY_PASSPHRASE_FILE"] == "/run/secrets/signing_key_passphrase"
    assert not env.get("ADMIN_PASSWORD")


def test_prod_scales_stateless_services_and_runs_monitoring(config: Any) -> None:
    services = config(PROD)["services"]
    assert services["user-service"]["deploy"]["replicas"] >= 2
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert set(config(PROD)["secrets"]) == set(SECRETS)


def test_exchange_credentials_are_encrypted_with_a_key_from_a_secret_file(config: Any) -> None:
    engine = config(PROD)["services"]["trading-engine"]
    assert engine["environment"]["CREDENTIALS_KEY_FILE"] == "/run/secrets/credentials_key"
    # Only passed through from the operator's shell, never given a value: a plain variable wins over its file.
    assert engine["environment"].get("CREDENTIALS_KEY") is None
    assert {s["source"] if isinstance(s, dict) else s for s in engine["secrets"]} >= {"credentials_key"}
    k8s = (ROOT / "infrastructure/k8s/base/trading-engine.yaml").read_text()
    assert "CREDENTIALS_KEY_FILE" in k8s and "/run/secrets/aitrading/credentials_key" in k8s


# ---------------------------------------------------------------------------------------------- images

def dockerfile(spec: ServiceSpec) -> str:
    path = spec.source_dir(ROOT) / "Dockerfile"
    assert path.exists(), f"{spec.name} has no Dockerfile"
    return path.read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines()
                                              if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def build_args(text: str) -> dict[str, str]:
    return dict(arg.split("=", 1) for kw, arg in instructions(text) if kw == "ARG" and "=" in arg)


@pytest.mark.parametrize("spec", SERVICES, ids=SERVICE_IDS)
def test_dockerfile_builds_and_runs_the_service_of_its_folder(spec: ServiceSpec) -> None:
    text = dockerfile(spec)
    args = build_args(text)
    assert (args["SERVICE"], args["PACKAGE"], args["PORT"]) == (spec.name, spec.package, str(spec.port))
    steps = instructions(text)
    assert ("EXPOSE", "${PORT}") in steps
    healthcheck = next(rest for kw, rest in steps if kw == "HEALTHCHECK")
    assert "http://127.0.0.1:" in healthcheck and "/health" in healthcheck and "PORT" in healthcheck
    assert ("USER", "app") in steps
    assert ("CMD", '["sh", "-c", "exec python -m \\"$SERVICE_PACKAGE\\""]') in steps
    assert any(kw == "ENV" and "SERVICE_PACKAGE=${PACKAGE}" in rest and "HOST=0.0.0.0" in rest
               for kw, rest in steps)
    assert any(kw == "RUN" and 'uv sync --frozen --no-dev --no-editable --package "${SERVICE}"' in rest
               for kw, rest in steps)
    assert (spec.source_dir(ROOT) / "src" / spec.package / "__main__.py").exists()


def test_dockerfiles_differ_only_in_their_service_arguments() -> None:
    service_args = re.compile(r"^ARG (SERVICE|PACKAGE|PORT)=.*$", re.MULTILINE)
    bodies = {spec.name: service_args.sub("", dockerfile(spec)) for spec in SERVICES}
    reference = bodies[SERVICE_IDS[0]]
    assert {name for name, body in bodies.items() if body != reference} == set()


def test_every_dockerfile_belongs_to_an_implemented_service() -> None:
    folders = {path.parent.name for path in (ROOT / "services").glob("*/Dockerfile")}
    assert folders == set(SERVICE_IDS)


def test_image_runs_on_python_3_11_slim_in_two_stages() -> None:
    text = dockerfile(SERVICES[0])
    assert build_args(text)["PYTHON_IMAGE"].startswith("python:3.11-slim")
    froms = [rest for kw, rest in instructions(text) if kw == "FROM"]
    assert froms[1:] == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]


def test_build_context_keeps_the_workspace_and_drops_tests_and_local_state() -> None:
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "services/*/tests", "shared/tests", "tests"} <= patterns
    assert not patterns & {"pyproject.toml", "uv.lock", "shared", "services", "shared/src"}


def test_lock_file_is_current_so_frozen_image_builds_install_every_service() -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    result = subprocess.run([uv, "lock", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    lock = (ROOT / "uv.lock").read_text()
    for spec in SERVICES:
        assert f'name = "{spec.name}"' in lock


# ---------------------------------------------------------------------------------------------- monitoring

def test_prometheus_scrapes_every_implemented_service_on_its_port() -> None:
    document = yaml.safe_load((ROOT / "infrastructure/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    for spec in SERVICES:
        [target] = jobs[spec.name]["dns_sd_configs"]
        assert (target["names"], target["port"]) == ([spec.name], spec.port)


def test_grafana_reads_prometheus_and_charts_rate_latency_and_errors_by_service() -> None:
    grafana = ROOT / "infrastructure/grafana"
    provisioning = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    [source] = provisioning["datasources"]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads((grafana / "dashboards/services.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert any("rate(http_requests_total" in q and "by (job)" in q for q in queries)
    assert any("http_request_duration_seconds_bucket" in q for q in queries)
    assert any('status=~"5.."' in q for q in queries)


# ---------------------------------------------------------------------------------------------- kubernetes

K8S = ROOT / "infrastructure/k8s/base"


def k8s_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [doc for doc in yaml.safe_load_all((K8S / resource).read_text()) if doc]
    return docs


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name} in the kustomization"
    return matches[0]


@pytest.mark.parametrize("spec", SERVICES, ids=SERVICE_IDS)
def test_k8s_runs_each_implemented_service_on_its_port_with_probes(spec: ServiceSpec) -> None:
    deployment = k8s_object("Deployment", spec.name)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith(f"aitrading/{spec.name}:")
    assert [p["containerPort"] for p in container["ports"]] == [spec.port]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": spec.port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": spec.port}
    assert {"configMapRef": {"name": "aitrading-shared"}} in container["envFrom"]
    service = k8s_object("Service", spec.name)
    assert [p["port"] for p in service["spec"]["ports"]] == [spec.port]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_k8s_shared_config_addresses_every_service_by_its_service_name() -> None:
    data = k8s_object("ConfigMap", "aitrading-shared")["data"]
    assert json.loads(data["SERVICE_URLS"]) == urls_by_name()
    assert json.loads(data["DEPLOYED_SERVICES"]) == [s.name for s in SERVICES]
    assert data["HOST"] == "0.0.0.0"
    assert data["NATS_URL"].startswith("nats://") and data["DATABASE_URL_FILE"].startswith("/run/secrets/")


def test_k8s_has_no_deployment_of_a_service_that_does_not_exist() -> None:
    deployed = {d["metadata"]["name"] for d in k8s_documents() if d["kind"] == "Deployment"}
    assert deployed == set(SERVICE_IDS)


def test_kustomize_builds_the_base() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the manifests are still checked as YAML above")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc]
    assert kinds.count("Deployment") == len(SERVICES)
    assert all(doc["metadata"].get("namespace") == "aitrading"
               for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] != "Namespace")
