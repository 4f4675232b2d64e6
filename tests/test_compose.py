"""Deployment files: docker-compose.yaml (validated by docker-compose when installed), the
Grafana provisioning it mounts, the Dockerfile and the Ollama entrypoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from assistant.config import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yaml"
PUBLISH = PROJECT_ROOT / "docker-compose.publish.yaml"
PROVISIONING = PROJECT_ROOT / "grafana" / "provisioning"
REQUIRED = {
    "POSTGRES_PASSWORD": "pg-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
    "GRAFANA_DB_PASSWORD": "reader-secret",
}
# The stack's only doors: the API's load balancer, Grafana and the optional Streamlit UI.
ENTRY_POINTS = {"lb", "grafana", "streamlit"}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _docker_compose(
    env_file: Path, *args: str, files: tuple[Path, ...] = (COMPOSE,)
) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    chosen = [option for path in files for option in ("-f", str(path))]
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), *chosen, *args],
        cwd=PROJECT_ROOT,
        # Only the env file speaks: a developer's shell or .env must not satisfy the test.
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env_file(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "compose.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def test_compose_file_validates(tmp_path):
    result = _docker_compose(_env_file(tmp_path, **REQUIRED), "--profile", "ui", "config", "-q")
    assert result.returncode == 0, result.stderr


def _check_against_compose_spec(path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with the Compose Specification's schema, which it ships: no container
    runtime needed, so it runs on every machine (docker-compose only where installed)."""
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert checker, "check-jsonschema is part of the dev extra"
    return subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_matches_the_compose_specification():
    result = _check_against_compose_spec(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_specification_check_catches_a_mistake(tmp_path):
    """A misspelt service key is refused."""
    broken = _compose()
    broken["services"]["app"]["enviroment"] = {"A": "1"}
    path = tmp_path / "docker-compose.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = _check_against_compose_spec(path)
    assert result.returncode != 0
    assert "enviroment" in result.stdout + result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_a_password(tmp_path, missing):
    values = {k: v for k, v in REQUIRED.items() if k != missing}
    result = _docker_compose(_env_file(tmp_path, **values), "config", "-q")
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_resolved_stack_wiring(tmp_path):
    env = _env_file(tmp_path, **REQUIRED, GRAFANA_PORT="3999", APP_PORT="5999", TZ="Asia/Tokyo")
    result = _docker_compose(env, "--profile", "ui", "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]

    def published(name: str) -> set[int]:
        return {int(port["published"]) for port in services[name]["ports"]}

    # The load balancer is the API's one published port; the replicas publish none, so
    # `--scale app=3` starts three.
    assert published("grafana") == {3999} and published("lb") == {5999}
    assert "ports" not in services["app"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-secret"
    assert services["app"]["environment"]["TZ"] == "Asia/Tokyo"
    assert services["app"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["app"]["environment"]["RATE_LIMIT_STORAGE_URI"] == "redis://redis:6379/0"
    assert services["app"]["environment"]["JOB_WORKER_THREADS"] == "0"
    assert services["worker"]["command"] == ["assistant", "worker"]
    assert services["worker"]["image"] == services["app"]["image"]
    # The UI has an image of its own (the `ui` target); the API's carries no UI extra.
    assert services["streamlit"]["build"]["target"] == "ui"
    assert services["app"]["build"]["target"] == "api"
    assert services["streamlit"]["environment"]["ASSISTANT_URL"] == "http://lb:5000"


def _resolved(tmp_path: Path, *files: Path) -> dict:
    env = _env_file(tmp_path, **REQUIRED)
    result = _docker_compose(env, "--profile", "ui", "config", files=files or (COMPOSE,))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_only_the_entry_points_publish_a_port(tmp_path):
    services = _resolved(tmp_path)
    published = {name for name, service in services.items() if service.get("ports")}
    assert published <= ENTRY_POINTS, published - ENTRY_POINTS
    for name in ("postgres", "redis", "ollama"):
        assert "ports" not in services[name], name


def test_the_publish_override_binds_the_backends_to_localhost(tmp_path):
    services = _resolved(tmp_path, COMPOSE, PUBLISH)
    for name, port in (("postgres", 5432), ("redis", 6379), ("ollama", 11434)):
        [mapping] = services[name]["ports"]
        assert _port(mapping) == ("127.0.0.1", port, port), name


def _port(mapping: str | dict) -> tuple[str, int, int]:
    """(host address, published, target) of a resolved port: docker-compose v1 writes one with
    an address as `127.0.0.1:5432:5432/tcp`, v2 as a mapping."""
    if isinstance(mapping, str):
        host, published, target = mapping.split("/")[0].split(":")
        return host, int(published), int(target)
    return mapping.get("host_ip", ""), int(mapping["published"]), int(mapping["target"])


def test_grafana_reads_as_the_read_only_login_never_the_owner(tmp_path):
    services = _resolved(tmp_path)
    grafana = services["grafana"]["environment"]
    postgres = services["postgres"]["environment"]
    # Grafana is not even told the owner's name or password.
    assert "POSTGRES_PASSWORD" not in grafana and "POSTGRES_USER" not in grafana
    assert grafana["GRAFANA_DB_USER"] != postgres["POSTGRES_USER"]
    # The login the datasource uses is the one initdb/grafana-login.sh creates, with the
    # password it is given, from the same variables.
    assert grafana["GRAFANA_DB_USER"] == postgres["GRAFANA_DB_USER"] == "grafana"
    assert grafana["GRAFANA_DB_PASSWORD"] == postgres["GRAFANA_DB_PASSWORD"] == "reader-secret"
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "postgres.yaml").read_text())
    [source] = datasource["datasources"]
    assert source["user"] == "${GRAFANA_DB_USER}"
    assert source["secureJsonData"]["password"] == "${GRAFANA_DB_PASSWORD}"
    login = (PROJECT_ROOT / "initdb" / "grafana-login.sh").read_text()
    assert "GRANT grafana_reader TO" in login and "NOSUPERUSER" in login


def test_compose_services_as_the_stack_needs_them():
    compose = _compose()
    assert "version" not in compose and "name" not in compose
    services = compose["services"]
    postgres = services["postgres"]
    assert "./initdb:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert any(v.split(":")[0] in compose["volumes"] for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert services["ollama"]["volumes"][1] == "./ollama/entrypoint.sh:/entrypoint.sh:ro"
    assert "healthcheck" in services["ollama"] and "healthcheck" in services["app"]
    assert "/health/ready" in " ".join(services["app"]["healthcheck"]["test"])
    assert (
        "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in (services["lb"]["volumes"])
    )
    assert services["app"]["environment"]["WEB_CONCURRENCY"].startswith("${WEB_CONCURRENCY")
    assert services["streamlit"]["profiles"] == ["ui"]
    assert "assistant/ui/streamlit_app.py" in services["streamlit"]["command"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("${"), f"{name}: host port {port} is not configurable"


def test_no_password_has_a_default_in_the_compose_file():
    text = COMPOSE.read_text(encoding="utf-8")
    for variable in REQUIRED:
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), variable


def test_env_example_documents_every_compose_variable():
    documented = (PROJECT_ROOT / ".env.example").read_text(encoding="utf-8")
    text = COMPOSE.read_text(encoding="utf-8") + PUBLISH.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used
    assert not {v for v in used if not re.search(rf"^#? ?{v}=", documented, re.M)}


def test_grafana_mounts_what_its_provisioning_names():
    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yaml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    source = next(host for host, target in mounts.items() if target == folder)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(folder + "/")
    assert (PROJECT_ROOT / source / home.removeprefix(folder + "/")).is_file()
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "postgres.yaml").read_text())
    needed = set(re.findall(r"\$\{(\w+)\}", json.dumps(datasource)))
    assert needed and needed <= set(grafana["environment"])


def test_dockerfile_is_multi_stage_non_root_and_healthchecked():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+) AS (\S+)", dockerfile, re.M)
    assert stages == [
        ("python:3.12-slim", "build"),
        ("build", "build-ui"),
        ("python:3.12-slim", "base"),
        ("base", "ui"),
        ("base", "api"),
    ]
    # The default (last) target is the lean API: its virtualenv has no UI extra.
    api = dockerfile.split("FROM base AS api", 1)[1]
    assert "COPY --from=build /opt/venv" in api and "build-ui" not in api
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert len(users) == 2 and not {"root", "0"} & set(users)
    assert re.search(r"^HEALTHCHECK .*\n.*/health", dockerfile, re.M)
    assert re.search(r'^CMD \["assistant", "serve"\]', dockerfile, re.M)
    # The extras come from a build argument that defaults to none (never dev); the
    # semantic extra takes PyTorch's CPU build first.
    assert re.search(r"^ARG EXTRAS=$", dockerfile, re.M) and "[dev]" not in dockerfile
    assert 'pip install ".${EXTRAS:+[$EXTRAS]}"' in dockerfile
    assert re.search(r"\*,semantic,\*\).*\n.*pip install torch --index-url \S+/cpu", dockerfile)


def test_dockerignore_keeps_what_the_dockerfile_copies():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text(encoding="utf-8")
    ignored = [
        line.strip().rstrip("/")
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".git" in ignored and ".venv" in ignored and ".env" in ignored
    # Runtime state, customers' text among it, never goes into an image.
    assert {"data/spool", "data/pgdata", "data/cache"} <= set(ignored)
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for source in line.split():
            assert (PROJECT_ROOT / source).exists(), source
            assert not any(source == i or source.startswith(i + "/") for i in ignored), source


FAKE_OLLAMA = """#!/bin/sh
# Stands in for the ollama CLI: `serve` runs until TERM, `list` and `pull` use $STATE.
case "$1" in
  serve) touch "$STATE/up"; trap 'echo stopped >> "$STATE/log"; exit 0' TERM
         while :; do sleep 0.1; done ;;
  list) [ -f "$STATE/up" ] || exit 1; echo "NAME ID SIZE MODIFIED"; cat "$STATE/models" ;;
  pull) echo "$2:latest 123 1GB now" >> "$STATE/models"; echo "pull $2" >> "$STATE/log"
        echo pulled ;;
  *) exit 2 ;;
esac
"""


def _run_entrypoint(tmp_path: Path, ready: str) -> str:
    """Start the entrypoint on the fake CLI, wait for `ready` in its output, stop it as Docker
    does, and return the output."""
    output = tmp_path / "output.txt"
    with output.open("w") as sink:
        process = subprocess.Popen(
            ["sh", str(PROJECT_ROOT / "ollama" / "entrypoint.sh")],
            env={
                "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                "STATE": str(tmp_path),
                "OLLAMA_MODEL": "tiny",
            },
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while ready not in output.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, output.read_text()
            time.sleep(0.1)
        assert ready in output.read_text()
        assert process.poll() is None, "the entrypoint must keep the server in the foreground"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, output.read_text()
    (tmp_path / "up").unlink()
    return output.read_text()


def test_ollama_entrypoint_pulls_the_model_once_and_stops_cleanly(tmp_path):
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "ollama"
    fake.write_text(FAKE_OLLAMA)
    fake.chmod(0o755)
    (tmp_path / "models").write_text("")
    _run_entrypoint(tmp_path, ready="pulled")
    _run_entrypoint(tmp_path, ready="model tiny already present")
    assert (tmp_path / "models").read_text().splitlines() == ["tiny:latest 123 1GB now"]
    log = (tmp_path / "log").read_text().splitlines()
    assert log == ["pull tiny", "stopped", "stopped"]


def test_the_load_balancer_config_is_valid_and_checks_readiness():
    config = PROJECT_ROOT / "deploy" / "haproxy.cfg"
    text = config.read_text(encoding="utf-8")
    assert "option httpchk GET /health/ready" in text
    assert re.search(r"server-template app \d+-\d+ app:5000", text)
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (.ci/run installs it)")
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "Configuration file is valid" in result.stdout + (
        result.stderr
    ), result.stderr
