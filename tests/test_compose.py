"""The deployment files wire the same service `make run` starts: there is no Docker engine here,
so these read docker-compose.yml, the GPU override, the Procfile and .env.example and check that
they agree with each other and with the settings."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("web", "worker", "batchworker", "trainer", "beat")
QUEUES = {"interactive", "batch", "training"}  # the design's queues, routed in the settings


def substitute(text: str) -> str:
    """Each ${VAR...} replaced by `env_var`, as if VAR were set."""
    return re.sub(r"\$\{([A-Z_]+)[^}]*\}", lambda m: f"env_{m[1].lower()}", text)


def load(name: str) -> dict:
    """The file as compose reads it, with every variable set (`substitute`)."""
    return yaml.safe_load(substitute((ROOT / name).read_text()))


@pytest.fixture(scope="module")
def services() -> dict:
    return load("docker-compose.yml")["services"]


def celery_queues(command: str) -> set[str]:
    args = shlex.split(command)
    return set(args[args.index("-Q") + 1].split(",")) if "-Q" in args else set()


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_every_service_is_there(services):
    assert set(services) >= {*APP_SERVICES, "migrate", "redis", "postgres"}


def test_app_services_share_one_environment_pointing_at_the_stack(services):
    envs = [services[name]["environment"] for name in (*APP_SERVICES, "migrate")]
    assert all(env == envs[0] for env in envs)
    env = envs[0]
    database = urlsplit(env["DATABASE_URL"])
    assert (database.scheme, database.hostname, database.path) == (
        "postgres",
        "postgres",
        "/digits",
    )
    postgres_env = services["postgres"]["environment"]
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.path.lstrip("/") == postgres_env["POSTGRES_DB"]
    assert urlsplit(env["REDIS_URL"]).hostname == "redis"
    # Secrets come from .env or the shell, never from the committed file.
    assert env["SECRET_KEY"] == "env_secret_key"
    assert database.password == postgres_env["POSTGRES_PASSWORD"] == "env_postgres_password"


def test_app_services_wait_for_migrations_and_healthy_backends(services):
    for name in APP_SERVICES:
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, name
    migrate = services["migrate"]
    assert "migrate" in migrate["command"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"  # one-shot: a restart loop would never "complete"
    # service_healthy waits forever on a service without a healthcheck.
    assert services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"]


def test_broker_and_database_keep_their_data(services):
    top_volumes = load("docker-compose.yml")["volumes"]
    redis = services["redis"]
    assert "--appendonly yes" in redis["command"]
    assert any(
        v.split(":")[1] == "/data" and v.split(":")[0] in top_volumes for v in redis["volumes"]
    )
    postgres_mounts = [v.split(":") for v in services["postgres"]["volumes"]]
    assert [src for src, dst in postgres_mounts if dst == "/var/lib/postgresql/data"][
        0
    ] in top_volumes


def test_worker_gets_a_gpu_only_through_the_override(services):
    # In the base file a reservation would stop `docker compose up` on a host without a GPU.
    assert "deploy" not in services["worker"]
    override = load("docker-compose.gpu.yml")["services"]
    assert set(override) <= set(services)
    devices = override["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)


def test_workers_consume_every_queue_the_settings_route_to(services):
    settings = importlib.import_module("digitsite.settings")
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    routed.add(settings.CELERY_TASK_DEFAULT_QUEUE)
    consumed = set().union(*(celery_queues(services[n].get("command", "")) for n in APP_SERVICES))
    assert routed | QUEUES <= consumed
    # Drawings have a worker of their own, so a batch job never delays one.
    assert celery_queues(services["worker"]["command"]) == {"interactive"}


def test_procfile_runs_the_same_processes_as_compose(services):
    processes = procfile()
    assert set(processes) == set(APP_SERVICES)
    for name in ("worker", "batchworker", "trainer", "beat"):
        command = processes[name].replace('"${PYTHON:-python}" -m ', "", 1)
        # The same variables (process counts) on both sides.
        assert substitute(command) == services[name]["command"], name


def test_every_build_has_its_dockerfile(services):
    builds = [s["build"] for s in services.values() if "build" in s]
    assert builds
    for build in builds:
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (context / dockerfile).is_file()
    user = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user and user[-1] not in ("root", "0")


def test_env_example_documents_every_setting_read_from_the_environment():
    names = set(
        re.findall(
            r"\.(?:str|bool|int|float|list|db|url|json)\(\s*\"([A-Z][A-Z0-9_]*)\"",
            (ROOT / "digitsite" / "settings.py").read_text(),
        )
    )
    compose_vars = set(
        re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text())
    )
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert names and "SECRET_KEY" in names
    assert (names | compose_vars) - documented == set()
