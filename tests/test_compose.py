"""The production-shaped stack: docker-compose.temporal.yml, its scripts and the app image.

There is no Docker engine on the build machines, so these tests read the files instead of running
them, and run the namespace job's script against a stand-in ``temporal`` CLI (when a POSIX shell
is available) to prove its retry bound, its idempotency and the search attributes it registers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from app.secrets_demo import DEMO_SECRETS
from dispatch import config as firm_config
from dispatch import search_attributes

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.temporal.yml"
SETUP_SCRIPT = ROOT / "deploy" / "temporal" / "setup-postgres.sh"
NAMESPACE_SCRIPT = ROOT / "deploy" / "temporal" / "create-namespace.sh"
DYNAMIC_CONFIG = ROOT / "deploy" / "temporal" / "dynamicconfig" / "production.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

SETUP_JOB = "temporal-admin-tools"
NAMESPACE_JOB = "temporal-create-namespace"
APP_SERVICES = ("worker", "starter")

# Every secret the app reads, passed to the containers by name only.
SECRET_NAMES = (
    "KARBON_BEARER_TOKEN",
    "KARBON_ACCESS_KEY",
    "KARBON_WEBHOOK_SIGNING_KEY",
    "DISPATCH_WEBHOOK_SECRET",
    "HARVEST_ACCESS_TOKEN",
    "HARVEST_ACCOUNT_ID",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SENDGRID_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CRM_WEBHOOK_SECRET",
    "DISPATCH_LINK_SECRET",
    "XERO_ACCESS_TOKEN",
    "XERO_TENANT_ID",
    "TOGGL_API_TOKEN",
    "QBTIME_ACCESS_TOKEN",
    "TEAMS_WEBHOOK_URL",
    "MS_TENANT_ID",
    "MS_CLIENT_ID",
    "MS_CLIENT_SECRET",
)

EXPECTED_SEARCH_ATTRIBUTES = {
    "DispatchStatus": "Keyword",
    "Preparer": "Keyword",
    "Reviewer": "Keyword",
    "ClientId": "Keyword",
    "ServiceType": "Keyword",
    "DueDate": "Datetime",
}

SECRET_LIKE_KEY = re.compile(r"TOKEN|SECRET|PASSWORD|PWD|_KEY$|CREDENTIALS")


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def env_of(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping, whichever of compose's two syntaxes it uses."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else [item, None] for item in raw)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in raw.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency name -> condition (the short list syntax means ``service_started``)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs, from short ("[ip:]host:container") or long syntax."""
    pairs: set[tuple[int, int]] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            pairs.add((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {entry!r} is not published on a fixed host port"
        pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


BIND_MOUNT = re.compile(r"^(\$\{[^}]*\}|[^:]+):([^:]+)(?::(ro|rw))?$")


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host path, container path, mode) for each short-syntax bind mount (not named volumes)."""
    mounts = []
    for entry in service.get("volumes") or []:
        match = BIND_MOUNT.match(str(entry))
        assert match, f"unexpected volume syntax {entry!r}"
        host, container, mode = match.group(1), match.group(2), match.group(3) or "rw"
        if host.startswith((".", "/", "${")):
            mounts.append((host, container, mode))
    return mounts


def default_of(interpolated: str) -> str:
    """``${NAME:-default}`` -> ``default``; anything else unchanged."""
    match = re.fullmatch(r"\$\{[A-Za-z_]\w*:?-(.*)\}", interpolated)
    return match.group(1) if match else interpolated


def image_and_tag(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"image {image!r} has no tag"
    return name, tag


def closure(all_services: dict[str, dict[str, Any]], start: str) -> set[str]:
    """Every service ``start`` waits for, directly or not."""
    seen: set[str] = set()
    todo = list(depends_on(all_services[start]))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(depends_on(all_services[name]))
    return seen


def script_calls(text: str) -> str:
    """Script text with backslash-newline continuations joined, so each command is one line."""
    return re.sub(r"\s*\\\n\s*", " ", text)


# --- services, images, ordering, ports ---------------------------------------------------------


def test_the_stack_defines_every_service(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgresql", SETUP_JOB, "temporal", NAMESPACE_JOB, "temporal-ui", *APP_SERVICES}
    assert expected <= set(services)


def test_images_are_pinned_and_auto_setup_is_not_used(services: dict[str, dict[str, Any]]) -> None:
    images = {name: svc["image"] for name, svc in services.items() if "image" in svc}
    assert set(images) >= {"postgresql", SETUP_JOB, "temporal", NAMESPACE_JOB, "temporal-ui"}
    for service, image in images.items():
        name, tag = image_and_tag(image)
        assert tag != "latest", f"{service} runs an unpinned image {image}"
        assert "auto-setup" not in name, f"{service} uses the deprecated auto-setup image"

    assert image_and_tag(images["postgresql"]) == ("postgres", "16")
    server, server_tag = image_and_tag(images["temporal"])
    assert server == "temporalio/server"
    assert tuple(int(p) for p in server_tag.split(".")[:2]) >= (1, 30)
    # The schema job must migrate to the schema this server version expects.
    assert images[SETUP_JOB] == images[NAMESPACE_JOB] == f"temporalio/admin-tools:{server_tag}"
    assert image_and_tag(images["temporal-ui"])[0] == "temporalio/ui"


def test_start_up_order(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on(services[SETUP_JOB]) == {"postgresql": "service_healthy"}
    assert depends_on(services["temporal"]) == {
        SETUP_JOB: "service_completed_successfully",
        "postgresql": "service_healthy",
    }
    assert depends_on(services[NAMESPACE_JOB]) == {"temporal": "service_healthy"}
    assert depends_on(services["temporal-ui"]) == {"temporal": "service_healthy"}
    for app in APP_SERVICES:
        assert depends_on(services[app]) == {NAMESPACE_JOB: "service_completed_successfully"}
        # ... which means the whole chain, schema job included, runs before the app starts.
        assert closure(services, app) >= {NAMESPACE_JOB, "temporal", SETUP_JOB, "postgresql"}
        assert app not in closure(services, app)


def test_one_shot_jobs_retry_a_bounded_number_of_times(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services[SETUP_JOB]["restart"] == "on-failure:6"
    assert re.fullmatch(r"on-failure:\d+", services[NAMESPACE_JOB]["restart"])


def test_health_checks_gate_the_chain(services: dict[str, dict[str, Any]]) -> None:
    pg_check = services["postgresql"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(pg_check)
    assert services["temporal"]["healthcheck"]["test"]
    starter_check = " ".join(services["starter"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in starter_check


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    assert (7233, 7233) in published_ports(services["temporal"])
    assert (8080, 8080) in published_ports(services["temporal-ui"])
    assert (8000, 8000) in published_ports(services["starter"])
    # The database is reachable only on the compose network.
    assert published_ports(services["postgresql"]) == set()


def test_postgres_keeps_its_data_in_a_named_volume(compose: dict[str, Any]) -> None:
    volumes = [str(v) for v in compose["services"]["postgresql"]["volumes"]]
    named = set(compose.get("volumes") or {})
    assert any(
        v.split(":")[0] in named and v.endswith(":/var/lib/postgresql/data") for v in volumes
    )


# --- the Temporal server and its configuration -------------------------------------------------


def test_server_environment(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["temporal"])
    assert env["DB"] == "postgres12"
    assert env["BIND_ON_IP"] == "0.0.0.0"
    assert env["POSTGRES_SEEDS"] == "postgresql"
    for key in ("DB_PORT", "POSTGRES_USER", "POSTGRES_PWD"):
        assert env.get(key), f"temporal needs {key}"
    assert env["DB_PORT"] == "5432"


def test_dynamic_config_file_is_the_mounted_production_file(
    services: dict[str, dict[str, Any]],
) -> None:
    path = env_of(services["temporal"])["DYNAMIC_CONFIG_FILE_PATH"]
    assert path is not None
    for host, container, mode in bind_mounts(services["temporal"]):
        if path.startswith(container.rstrip("/") + "/"):
            assert mode == "ro"
            resolved = (ROOT / host / path[len(container.rstrip("/")) + 1 :]).resolve()
            assert resolved == DYNAMIC_CONFIG
            break
    else:
        pytest.fail(f"DYNAMIC_CONFIG_FILE_PATH {path} is not inside a mounted directory")


def test_production_dynamic_config() -> None:
    settings = yaml.safe_load(DYNAMIC_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(settings, dict)
    for key, values in settings.items():
        assert isinstance(values, list) and values, f"{key}: expected a list of {{value: ...}}"
        assert all(isinstance(v, dict) and "value" in v for v in values), key
    assert settings["limit.maxIDLength"][0]["value"] == 255
    # A dev-server convenience that makes every read skip the cache.
    assert "system.forceSearchAttributesCacheRefreshOnRead" not in settings


# --- the one-shot jobs' scripts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "script"), [(SETUP_JOB, SETUP_SCRIPT), (NAMESPACE_JOB, NAMESPACE_SCRIPT)]
)
def test_job_runs_its_script_mounted_read_only(
    services: dict[str, dict[str, Any]], service: str, script: Path
) -> None:
    job = services[service]
    mounts = {container: (host, mode) for host, container, mode in bind_mounts(job)}
    command = job["command"] if isinstance(job["command"], list) else job["command"].split()
    in_container = command[-1]
    assert in_container in mounts, f"{service} runs {in_container}, which is not mounted"
    host, mode = mounts[in_container]
    assert mode == "ro"
    assert (ROOT / host).resolve() == script
    # The admin-tools image is Alpine: no bash, so the scripts are POSIX sh.
    assert job["entrypoint"] == ["/bin/sh"]
    assert script.read_text(encoding="utf-8").startswith("#!/bin/sh\n")


@pytest.mark.parametrize("script", [SETUP_SCRIPT, NAMESPACE_SCRIPT], ids=lambda p: p.name)
def test_scripts_are_executable(script: Path) -> None:
    assert script.is_file()
    assert script.stat().st_mode & stat.S_IXUSR, f"chmod +x {script.relative_to(ROOT)}"


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell on this machine")
@pytest.mark.parametrize("script", [SETUP_SCRIPT, NAMESPACE_SCRIPT], ids=lambda p: p.name)
def test_scripts_parse(script: Path) -> None:
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", [SETUP_SCRIPT, NAMESPACE_SCRIPT], ids=lambda p: p.name)
def test_scripts_reference_no_unset_variable(script: Path) -> None:
    """Under ``set -u`` a misspelt name (upstream's ``$MAX_ATTdMPTS``) aborts the script."""
    text = script.read_text(encoding="utf-8")
    assert "set -eu" in text
    assigned = set(re.findall(r"(?<![\w$])([A-Za-z_]\w*)=", text))
    plain = set(re.findall(r"\$([A-Za-z_]\w*)", text))
    plain |= set(re.findall(r"\$\{([A-Za-z_]\w*)\}", text))
    unset = sorted(plain - assigned)
    assert not unset, f"{script.name} uses variables it never sets: {unset}"


def test_setup_script_creates_and_migrates_both_databases() -> None:
    text = script_calls(SETUP_SCRIPT.read_text(encoding="utf-8"))
    assert "temporal-sql-tool --plugin postgres12" in text
    for step in ("create", "setup-schema -v 0.0", "update-schema -d"):
        assert f'--db "$db" {step}' in text
    assert re.search(r'^migrate "\$DBNAME" "\$SCHEMA_ROOT/temporal/versioned"$', text, re.M)
    assert re.search(
        r'^migrate "\$VISIBILITY_DBNAME" "\$SCHEMA_ROOT/visibility/versioned"$', text, re.M
    )
    assert 'DBNAME="${DBNAME:-temporal}"' in text
    assert 'VISIBILITY_DBNAME="${VISIBILITY_DBNAME:-temporal_visibility}"' in text


def test_namespace_script_registers_exactly_the_search_attributes() -> None:
    text = script_calls(NAMESPACE_SCRIPT.read_text(encoding="utf-8"))
    registered = re.findall(r'^retry "[^"]*" ensure_search_attribute (\w+) (\w+)$', text, re.M)
    assert dict(registered) == EXPECTED_SEARCH_ATTRIBUTES
    assert len(registered) == len(EXPECTED_SEARCH_ATTRIBUTES)
    assert (
        'temporal operator search-attribute create --address "$ADDRESS" '
        '--namespace "$NAMESPACE" --name "$sa_name" --type "$sa_type"'
    ) in text
    # The same six the workflows upsert (dispatch/search_attributes.py).
    kinds = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    in_code = {k.name: kinds[k.indexed_value_type.name] for k in search_attributes.ALL_KEYS}
    assert in_code == EXPECTED_SEARCH_ATTRIBUTES


def test_namespace_script_polls_cluster_health_in_a_bounded_loop() -> None:
    text = script_calls(NAMESPACE_SCRIPT.read_text(encoding="utf-8"))
    assert re.search(r'^MAX_ATTEMPTS="\$\{SETUP_MAX_ATTEMPTS:-\d+\}"$', text, re.M)
    assert re.search(r'\[ "\$attempt" -ge "\$MAX_ATTEMPTS" \]', text)
    assert re.search(r'^retry "[^"]*" cluster_healthy$', text, re.M)
    assert 'temporal operator cluster health --address "$ADDRESS"' in text
    assert 'NAMESPACE="${TEMPORAL_NAMESPACE:-default}"' in text


# --- the namespace script, run against a stand-in CLI ------------------------------------------

STUB_CLI = """\
#!{python}
# Stand-in for the `temporal` CLI: records each call, keeps cluster state in a JSON file.
import json, os, sys

args = sys.argv[1:]
state_file = os.environ["STUB_STATE"]
with open(state_file) as f:
    state = json.load(f)
state["calls"].append(args)

def opt(name):
    return args[args.index(name) + 1]

def done(code, err=""):
    with open(state_file, "w") as f:
        json.dump(state, f)
    if err:
        print(err, file=sys.stderr)
    sys.exit(code)

command = " ".join(args[:3])
if command == "operator cluster health":
    state["health_calls"] += 1
    done(0 if state["health_calls"] > state["unhealthy_calls"] else 1, "connection refused")
if command == "operator namespace describe":
    done(0 if opt("--namespace") in state["namespaces"] else 1, "Namespace not found")
if command == "operator namespace create":
    state["namespaces"].append(opt("--namespace"))
    done(0)
if command == "operator search-attribute create":
    name, kind = opt("--name"), opt("--type")
    existing = state["search_attributes"].get(name)
    if existing and existing != kind:
        done(1, f"search attribute {{name}} already exists and has different type {{existing}}")
    if existing:
        done(1, f"unable to add search attributes: Search attribute {{name}} already exists.")
    state["search_attributes"][name] = kind
    done(0)
done(64, "unexpected call: " + " ".join(args))
"""


class StubCluster:
    def __init__(self, tmp: Path) -> None:
        self.state_file = tmp / "state.json"
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        cli = bin_dir / "temporal"
        cli.write_text(STUB_CLI.format(python=sys.executable), encoding="utf-8")
        cli.chmod(0o755)
        self.path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        self.save(
            {
                "calls": [],
                "health_calls": 0,
                "unhealthy_calls": 0,
                "namespaces": [],
                "search_attributes": {},
            }
        )

    def save(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state), encoding="utf-8")

    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.state_file.read_text(encoding="utf-8"))
        return loaded

    def update(self, **changes: Any) -> None:
        self.save({**self.state(), **changes})

    def run_job(self, **env: str) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": self.path,
            "STUB_STATE": str(self.state_file),
            "TEMPORAL_ADDRESS": "temporal:7233",
            "SETUP_RETRY_DELAY_SECONDS": "0",
            **env,
        }
        return subprocess.run(
            ["sh", str(NAMESPACE_SCRIPT)],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self, prefix: str) -> list[list[str]]:
        words = prefix.split()
        return [c for c in self.state()["calls"] if c[: len(words)] == words]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StubCluster]:
    if shutil.which("sh") is None:
        pytest.skip("no POSIX shell on this machine")
    yield StubCluster(tmp_path)


def test_job_waits_for_health_then_registers_namespace_and_search_attributes(
    cluster: StubCluster,
) -> None:
    cluster.update(unhealthy_calls=2)
    result = cluster.run_job(TEMPORAL_NAMESPACE="acme", TEMPORAL_NAMESPACE_RETENTION="45d")
    assert result.returncode == 0, result.stderr

    state = cluster.state()
    assert state["health_calls"] == 3
    assert state["namespaces"] == ["acme"]
    (create,) = cluster.calls("operator namespace create")
    assert create[create.index("--retention") + 1] == "45d"
    assert state["search_attributes"] == EXPECTED_SEARCH_ATTRIBUTES
    for call in cluster.calls("operator search-attribute create"):
        assert call[call.index("--namespace") + 1] == "acme"
        assert call[call.index("--address") + 1] == "temporal:7233"


def test_job_is_idempotent(cluster: StubCluster) -> None:
    assert cluster.run_job().returncode == 0
    before = cluster.state()
    second = cluster.run_job()

    assert second.returncode == 0, second.stderr  # "already exists" counts as success
    assert cluster.state()["namespaces"] == before["namespaces"] == ["default"]
    assert len(cluster.calls("operator namespace create")) == 1
    assert cluster.state()["search_attributes"] == EXPECTED_SEARCH_ATTRIBUTES


def test_job_gives_up_after_max_attempts(cluster: StubCluster) -> None:
    cluster.update(unhealthy_calls=1_000)
    result = cluster.run_job(SETUP_MAX_ATTEMPTS="4")

    assert result.returncode != 0
    assert cluster.state()["health_calls"] == 4
    assert cluster.calls("operator namespace") == []


def test_job_fails_at_once_on_a_search_attribute_of_another_type(cluster: StubCluster) -> None:
    cluster.update(namespaces=["default"], search_attributes={"Preparer": "Int"})
    result = cluster.run_job()

    assert result.returncode != 0
    assert "different type" in result.stderr
    # Retrying cannot fix a type conflict: one attempt, and nothing registered after it.
    attempts = cluster.calls("operator search-attribute create")
    assert [c[c.index("--name") + 1] for c in attempts].count("Preparer") == 1
    assert "DueDate" not in cluster.state()["search_attributes"]


# --- the worker and starter --------------------------------------------------------------------


@pytest.mark.parametrize("app", APP_SERVICES)
def test_app_service(services: dict[str, dict[str, Any]], app: str) -> None:
    service = services[app]
    build = service["build"]
    assert (ROOT / build["context"]).resolve() == ROOT
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert service["command"] == ["python", f"{app}.py"]
    assert "user" not in service  # runs as the image's non-root user

    env = env_of(service)
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env.get("TEMPORAL_NAMESPACE")
    assert env["DISPATCH_FIRM_CONFIG"] == "/config/firm.yaml"
    mounts = {container: (host, mode) for host, container, mode in bind_mounts(service)}
    host, mode = mounts["/config/firm.yaml"]
    assert mode == "ro"
    assert host == "${DISPATCH_FIRM_CONFIG_HOST:-./examples/firms/default.yaml}"


def test_default_firm_file_exists_and_is_valid(services: dict[str, dict[str, Any]]) -> None:
    # A missing host file would be bind-mounted as an empty directory and the worker would fail.
    mounts = {container: host for host, container, _ in bind_mounts(services["worker"])}
    default = ROOT / default_of(mounts["/config/firm.yaml"])
    assert default.is_file(), f"{default.relative_to(ROOT)} is missing"
    firm_config.load_firm_config(default)


def test_namespace_is_the_same_for_every_service(services: dict[str, dict[str, Any]]) -> None:
    for name in (NAMESPACE_JOB, *APP_SERVICES):
        assert env_of(services[name])["TEMPORAL_NAMESPACE"] == "${TEMPORAL_NAMESPACE:-default}"


@pytest.mark.parametrize("app", APP_SERVICES)
def test_secrets_are_passed_through_by_name_only(
    services: dict[str, dict[str, Any]], app: str
) -> None:
    env = env_of(services[app])
    for name in SECRET_NAMES:
        assert name in env, f"{app} does not receive {name}"
        value = env[name]
        assert value is None or re.fullmatch(rf"\$\{{{name}(:-)?\}}", value), (
            f"{app}: {name} must be passed through from the host, not set to a value"
        )


def test_no_secret_has_a_literal_value_anywhere(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in env_of(service).items():
            if SECRET_LIKE_KEY.search(key) and value is not None:
                assert value.startswith("${"), f"{name}: {key} is set to a literal"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    leaked = [name for name, value in DEMO_SECRETS.items() if value in text]
    assert not leaked, f"demo secret values in the compose file: {leaked}"


def test_every_secret_the_firm_config_names_is_passed_through() -> None:
    named: set[str] = set()
    for obj in vars(firm_config).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel):
            for field_name, field in obj.model_fields.items():
                if field_name.endswith("_env") and isinstance(field.default, str):
                    named.add(field.default)
    assert named, "no *_env fields found in dispatch.config"
    assert named <= set(SECRET_NAMES)


# --- the app image -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_dockerfile_installs_the_project_and_runs_as_non_root() -> None:
    rows = dockerfile_instructions()
    assert [rest for kw, rest in rows if kw == "FROM"] == ["python:3.11-slim"]
    install = next(
        i
        for i, (kw, rest) in enumerate(rows)
        if kw == "RUN" and re.search(r"pip install \.(\s|$)", rest)
    )
    users = [(i, rest) for i, (kw, rest) in enumerate(rows) if kw == "USER"]
    assert users, "the image runs as root"
    last_index, last_user = users[-1]
    assert last_index > install
    assert last_user.split(":")[0] not in {"root", "0"}
    # Both entry points are in the image's working directory.
    copied = " ".join(rest for kw, rest in rows if kw == "COPY")
    assert "worker.py" in copied and "starter.py" in copied


# --- observability profile -----------------------------------------------------------------------


def test_prometheus_and_grafana_are_optional_and_pinned(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"]
        assert image_and_tag(services[name]["image"])[1] not in ("", "latest")


def test_prometheus_scrapes_the_worker_and_the_webhook_server(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    port = services["worker"]["environment"]["DISPATCH_METRICS_ADDRESS"].rsplit(":", 1)[1]
    assert targets == {f"worker:{port}", "starter:8000"}


def test_the_dashboard_only_charts_metrics_the_code_records() -> None:
    path = ROOT / "deploy/grafana/dashboards/engagement-dispatch.json"
    dashboard = json.loads(path.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = {
        re.sub(r"_(bucket|total)$", "", m) for e in exprs for m in re.findall(r"dispatch_\w+", e)
    }
    source = "".join(
        p.read_text() for d in ("workflows", "dispatch", "app") for p in (ROOT / d).rglob("*.py")
    )
    assert named and all(f'"{name}"' in source for name in named), named
