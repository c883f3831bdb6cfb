"""The deployment files, checked without a Docker engine.

docker-compose.yml, Dockerfile and .dockerignore are parsed and held to what a
working deployment needs: every service and dependency present, images pinned,
Temporal on PostgreSQL, the search attributes the workflows upsert registered,
only `reclaim` subcommands the console script really has, no secrets written
into the file, nothing the build needs left out of the build context.

`docker compose config -q` is not run: this machine's docker CLI has no compose
plugin ("docker: unknown command: docker compose"), so the check could never run here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())

INIT = "temporal-search-attributes"
RECLAIM_SEARCH_ATTRIBUTES = {"CustomerId", "AccountId", "ResourceId", "ActionKind", "RiskLevel", "ReclaimStatus"}

#: Search attributes every Temporal server defines itself: they cannot be registered,
#: and a workflow that upserts one fails its workflow task ("BadSearchAttributes").
SYSTEM_SEARCH_ATTRIBUTES = {
    "BatcherNamespace", "BatcherUser", "BinaryChecksums", "BuildIds", "CloseTime",
    "ExecutionDuration", "ExecutionStatus", "ExecutionTime", "HistoryLength", "HistorySizeBytes",
    "ParentRunId", "ParentWorkflowId", "RootRunId", "RootWorkflowId", "RunId", "StartTime",
    "StateTransitionCount", "TaskQueue", "WorkflowId", "WorkflowType",
}  # plus every name starting with "Temporal"

#: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY")


# ---------------------------------------------------------------------------- helpers


def environment(service: str) -> dict[str, str | None]:
    """A service's environment, list or mapping form; None means "from the host, if set"."""
    raw = SERVICES[service].get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in raw)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in raw.items()}


def depends_on(service: str) -> dict[str, str]:
    """Dependency -> condition (the short list form means service_started)."""
    raw = SERVICES[service].get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def image_of(service: str) -> tuple[str, str]:
    """(repository, tag) of a service's image; a digest counts as a tag."""
    image = SERVICES[service]["image"]
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return image, ""
    repository, tag = image.rsplit(":", 1)
    return repository, tag


def interpolate(text: str, host: dict[str, str]) -> str:
    """What compose makes of `text` given the host environment `host`."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        value = host.get(name)
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":?", "?"):
            if not value and not (op == "?" and value is not None):
                raise KeyError(f"{name}: {arg}")
            return value or ""
        if op in (":+", "+"):
            return arg if value else ""
        return value or ""

    return REFERENCE.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


def is_reference(value: str) -> bool:
    """True for a bare `${NAME}` / `${NAME:?message}`: a value that only comes from the host."""
    match = REFERENCE.fullmatch(value)
    return match is not None and (match["op"] or "") in ("", ":?", "?")


def published_ports(service: str) -> list[tuple[str, int, str]]:
    """(host ip, host port, protocol) for every port the service publishes on the host."""
    published: list[tuple[str, int, str]] = []
    for port in SERVICES[service].get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") is None:
                continue
            ip, host, protocol = port.get("host_ip", "0.0.0.0"), str(port["published"]), port.get("protocol", "tcp")
        else:
            spec, _, protocol = str(port).partition("/")
            parts = spec.split(":")
            if len(parts) == 1:
                continue  # container port only: an ephemeral host port, never a collision
            ip, host = (parts[0], parts[1]) if len(parts) == 3 else ("0.0.0.0", parts[0])
            protocol = protocol or "tcp"
        first, _, last = host.partition("-")
        published += [(ip, p, protocol) for p in range(int(first), int(last or first) + 1)]
    return published


def volume_mounts(service: str) -> list[tuple[str, str, str]]:
    """(type, source, target) of a service's volumes, short or long syntax."""
    mounts = []
    for volume in SERVICES[service].get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume["type"], str(volume.get("source", "")), volume["target"]))
            continue
        parts = volume.split(":")
        if len(parts) == 1:
            mounts.append(("volume", "", parts[0]))  # anonymous volume
            continue
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
        mounts.append((kind, source, target))
    return mounts


def init_script() -> str:
    service = SERVICES[INIT]
    command = service.get("command")
    return command if isinstance(command, str) else "\n".join(command)


def registered_search_attributes() -> list[tuple[str, str]]:
    return re.findall(r"--name\s+(\S+)\s+--type\s+(\S+)", init_script())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored_by_docker(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern excludes a path it matches and everything under a directory it matches."""
    parts = PurePosixPath(path).parts
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            any_depth = pattern.startswith("**/") and fnmatch.fnmatchcase(parts[depth - 1], pattern[3:])
            if fnmatch.fnmatchcase(prefix, pattern) or any_depth:
                excluded = not negate
                break
    return excluded


# ---------------------------------------------------------------------------- services


def test_every_service_of_the_deployment_is_there() -> None:
    assert {"postgresql", "temporal", INIT, "temporal-ui", "worker"} <= set(SERVICES)


def test_dependencies_exist_are_acyclic_and_their_conditions_can_be_met() -> None:
    for service in SERVICES:
        for target, condition in depends_on(service).items():
            assert target in SERVICES, f"{service} depends on unknown service {target}"
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{service} waits for {target} to be healthy"
            if condition == "service_completed_successfully":
                assert SERVICES[target].get("restart", "no") == "no", f"{target} must run once and exit"

    def visit(service: str, path: tuple[str, ...]) -> None:
        assert service not in path, f"dependency cycle: {' -> '.join((*path, service))}"
        for target in depends_on(service):
            visit(target, (*path, service))

    for service in SERVICES:
        visit(service, ())


def test_every_image_is_pinned_and_every_service_has_one_or_a_build() -> None:
    for service, spec in SERVICES.items():
        assert "image" in spec or "build" in spec, service
        if "image" not in spec:
            continue
        _, tag = image_of(service)
        assert tag, f"{service}: {spec['image']} has no tag"
        assert tag != "latest", f"{service}: {spec['image']} floats"
        assert "${" not in spec["image"], f"{service}: the version belongs in this file, not the host env"
    assert image_of("postgresql") == ("postgres", "16")
    assert image_of("temporal")[0] == "temporalio/auto-setup"
    assert image_of("temporal-ui")[0] == "temporalio/ui"
    # The admin tools are built per server release: keep them on the server's version.
    server_version = image_of("temporal")[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", server_version)
    tools_repository, tools_tag = image_of(INIT)
    assert tools_repository == "temporalio/admin-tools"
    assert tools_tag == server_version or tools_tag.startswith(f"{server_version}-")


def test_postgresql_is_healthchecked_and_keeps_its_data_in_a_named_volume() -> None:
    service = SERVICES["postgresql"]
    assert "pg_isready" in " ".join(service["healthcheck"]["test"])
    env = environment("postgresql")
    assert env["POSTGRES_DB"] == "reclaim", "the reclaim database is created on first start"
    data = [source for kind, source, target in volume_mounts("postgresql") if target == "/var/lib/postgresql/data"]
    assert data and data[0] in (COMPOSE.get("volumes") or {})
    assert not service.get("ports"), "PostgreSQL is for the stack only"


def test_temporal_persists_and_indexes_in_the_postgresql_service() -> None:
    env, pg = environment("temporal"), environment("postgresql")
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == "postgresql"
    assert env["POSTGRES_SEEDS"] in SERVICES
    assert env["DB_PORT"] == "5432"
    assert env["POSTGRES_USER"] == pg["POSTGRES_USER"]
    assert env["POSTGRES_PWD"] == pg["POSTGRES_PASSWORD"]
    # auto-setup only creates databases whose name differs from the user's; PostgreSQL
    # itself creates POSTGRES_DB, so a user named after a Temporal database would leave it missing.
    assert env["POSTGRES_USER"] not in {"temporal", "temporal_visibility"} - {pg["POSTGRES_DB"]}
    assert depends_on("temporal") == {"postgresql": "service_healthy"}
    health = " ".join(SERVICES["temporal"]["healthcheck"]["test"])
    assert "temporal operator cluster health" in health or "tctl" in health
    assert ("127.0.0.1", 7233, "tcp") in published_ports("temporal") or (
        "0.0.0.0", 7233, "tcp") in published_ports("temporal")


def test_temporal_reads_the_dynamic_config_mounted_from_the_repository() -> None:
    path = environment("temporal")["DYNAMIC_CONFIG_FILE_PATH"]
    assert path is not None
    target = path if path.startswith("/") else f"/etc/temporal/{path}"
    sources = [source for kind, source, mount in volume_mounts("temporal") if mount == target and kind == "bind"]
    assert sources, f"nothing is mounted at {target}"
    config = yaml.safe_load((ROOT / sources[0]).read_text())
    assert isinstance(config, dict) and config
    for key, entries in config.items():
        assert isinstance(entries, list) and entries, key
        for entry in entries:
            assert "value" in entry, key
            assert isinstance(entry.get("constraints", {}), dict), key


def test_every_file_mounted_from_the_repository_exists() -> None:
    for service in SERVICES:
        for kind, source, _ in volume_mounts(service):
            if kind == "bind" and not source.startswith("$"):
                assert (ROOT / source).exists(), f"{service} mounts missing {source}"
        build = SERVICES[service].get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (ROOT / context / "Dockerfile").is_file()
    for name, secret in (COMPOSE.get("secrets") or {}).items():
        source = secret.get("file", "")
        assert is_reference(source) or (ROOT / source).is_file(), f"secret {name}: {source}"


def test_named_volumes_are_declared_and_used() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = {source for s in SERVICES for kind, source, _ in volume_mounts(s) if kind == "volume" and source}
    assert used <= declared, f"undeclared volumes: {used - declared}"
    assert declared <= used, f"unused volumes: {declared - used}"
    assert declared, "the database must outlive its container"


def test_no_two_services_publish_the_same_host_port() -> None:
    seen: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for service in SERVICES:
        for ip, port, protocol in published_ports(service):
            seen.setdefault((port, protocol), []).append((service, ip))
    for (port, _), owners in seen.items():
        ips = [ip for _, ip in owners]
        collide = len(owners) > 1 and ("0.0.0.0" in ips or len(set(ips)) < len(ips))
        assert not collide, f"port {port} is published by {owners}"


def test_unauthenticated_temporal_endpoints_stay_on_loopback() -> None:
    for service in ("temporal", "temporal-ui"):
        assert published_ports(service), service
        assert {ip for ip, _, _ in published_ports(service)} == {"127.0.0.1"}, service
    assert ("127.0.0.1", 8080, "tcp") in published_ports("temporal-ui")
    assert environment("temporal-ui")["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert depends_on("temporal-ui") == {"temporal": "service_healthy"}


# ---------------------------------------------------------------------------- search attributes


def test_the_init_service_registers_reclaims_search_attributes_as_keywords() -> None:
    pairs = registered_search_attributes()
    names = [name for name, _ in pairs]
    assert not [name for name, count in Counter(names).items() if count > 1]
    assert set(names) == RECLAIM_SEARCH_ATTRIBUTES
    assert {kind for _, kind in pairs} == {"Keyword"}
    assert "temporal operator search-attribute create" in init_script()
    assert depends_on(INIT) == {"temporal": "service_healthy"}
    assert environment(INIT)["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_the_init_service_is_idempotent_and_fails_on_real_errors() -> None:
    script = init_script()
    assert "already exists" in script, "re-running after a restart must not fail"
    assert "exit 1" in script or "return 1" in script
    assert SERVICES[INIT].get("entrypoint", [None])[-1] in ("-c", "-ec", "-euc", "-eu -c")


def test_the_init_script_is_not_mangled_by_compose_interpolation() -> None:
    # Compose substitutes every lone `$`: the shell's own variables must be written `$$`.
    assert "$" not in init_script().replace("$$", ""), "write shell variables as $$name"


def test_the_registered_attributes_are_exactly_the_ones_the_workflows_upsert() -> None:
    from workflows import search_attributes as sa

    assert {key.name for key in sa.ALL} == {name for name, _ in registered_search_attributes()}
    assert all(key.indexed_value_type.name == "KEYWORD" for key in sa.ALL)


def test_no_system_search_attribute_is_registered() -> None:
    # The server refuses to create these ("reserved by system") and fails the workflow
    # task of any workflow that upserts one ("BadSearchAttributes").
    for name, _ in registered_search_attributes():
        assert name not in SYSTEM_SEARCH_ATTRIBUTES and not name.startswith("Temporal"), name


# ---------------------------------------------------------------------------- worker


def test_the_worker_runs_the_console_script_from_the_image_built_here() -> None:
    service = "worker"
    spec = SERVICES[service]
    assert spec["command"] == ["reclaim", "worker"]
    build = spec["build"]
    assert (build if isinstance(build, str) else build.get("context")) == "."
    assert spec["image"], "the image built here gets a name"
    assert spec.get("restart") == "unless-stopped"
    assert {"postgresql", "temporal", INIT} <= set(depends_on(service))
    assert depends_on(service)[INIT] == "service_completed_successfully"
    assert depends_on(service)["temporal"] == "service_healthy"
    assert spec.get("init") is True, "PID 1 must pass SIGTERM on so the worker can drain"


def test_the_worker_scales_horizontally() -> None:
    worker = SERVICES["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker, "a fixed name allows one replica only"
    assert not published_ports("worker"), "replicas cannot share a host port"


def test_each_worker_serves_its_metrics_inside_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deliveries are counted in the worker process: its own /metrics, on the port compose exposes."""
    from runtime.settings import Settings

    for name, value in environment("worker").items():
        if name.startswith("RECLAIM_WORKER_METRICS_"):
            assert value is not None
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.worker_metrics_port is not None, "the worker's /metrics is off in compose"
    assert settings.worker_metrics_host == "0.0.0.0", "bound to loopback, no scraper in the stack reaches it"
    assert str(settings.worker_metrics_port) in [str(p) for p in SERVICES["worker"].get("expose") or []]


def reclaim_commands() -> list[tuple[str, list[str]]]:
    """(service, argv) for every service whose command runs the `reclaim` console script."""
    found = []
    for service, spec in SERVICES.items():
        command = spec.get("command")
        argv = shlex.split(command) if isinstance(command, str) else list(command or [])
        if argv and argv[0] == "reclaim":
            found.append((service, argv))
    return found


def test_every_reclaim_command_in_compose_is_a_real_subcommand() -> None:
    import typer.main

    from starter.cli import app

    # A Group in click's sense; typer >= 0.29 ships its own copy of click, so no isinstance.
    subcommands = getattr(typer.main.get_command(app), "commands", None)
    assert isinstance(subcommands, dict) and subcommands, "starter.cli.app has no subcommands"
    commands = reclaim_commands()
    assert commands, "no service runs the reclaim console script"
    for service, argv in commands:
        assert len(argv) > 1, f"{service}: `reclaim` without a subcommand only prints its help"
        assert argv[1] in subcommands, f"{service}: `reclaim {argv[1]}` is not a subcommand of starter.cli.app"


def test_reclaim_settings_pick_up_the_compose_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    service = "worker"
    from runtime.settings import Settings
    from store.db import normalize_url

    env = environment(service)
    pg = environment("postgresql")
    host = {"POSTGRES_PASSWORD": "s3cret", "RECLAIM_ROLE_ARN_TEMPLATE": "arn:aws:iam::{account_id}:role/R",
            "AWS_ENDPOINT_URL": "http://aws.example:4566"}
    for name, value in env.items():
        resolved = interpolate(value, host) if value is not None else host.get(name)
        if resolved is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, resolved)

    settings = Settings()
    assert settings.temporal_address == "temporal:7233"
    assert settings.temporal_namespace == "default"
    url = normalize_url(settings.database())
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port) == ("postgresql", 5432)
    assert url.database == pg["POSTGRES_DB"]
    assert url.username == pg["POSTGRES_USER"]
    assert url.password == "s3cret"
    assert settings.role_arn_template == host["RECLAIM_ROLE_ARN_TEMPLATE"]
    assert settings.aws_endpoint_url == host["AWS_ENDPOINT_URL"]


def test_the_namespace_the_attributes_are_registered_in_is_the_one_reclaim_uses() -> None:
    namespaces = set(re.findall(r"--namespace\s+(\S+)", init_script()))
    assert namespaces == {environment("worker")["TEMPORAL_NAMESPACE"]}


def test_the_worker_gets_aws_credentials_from_the_host_only() -> None:
    env = environment("worker")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_ENDPOINT_URL", "RECLAIM_ROLE_ARN_TEMPLATE"):
        assert name in env, name
        value = env[name]
        assert value is None or is_reference(value), f"{name} must come from the host, not this file"


# ---------------------------------------------------------------------------- secrets


def test_no_secret_is_written_into_the_compose_file() -> None:
    for service in SERVICES:
        for name, value in environment(service).items():
            if name.endswith("_FILE"):
                assert value is None or value.startswith("/run/secrets/"), f"{service}: {name}"
            elif SECRET_NAME.search(name):
                assert value is None or is_reference(value), f"{service}: {name} holds a literal secret"
            elif value is not None and "://" in value and "@" in value:
                userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                password = userinfo.partition(":")[2]
                assert is_reference(password), f"{service}: {name} embeds a literal password"
    assert not re.search(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])", COMPOSE_TEXT)


def test_required_host_variables_are_documented_at_the_top() -> None:
    header = "\n".join(line for line in COMPOSE_TEXT.splitlines() if line.startswith("#"))
    required = {m["name"] for m in REFERENCE.finditer(COMPOSE_TEXT) if (m["op"] or "").endswith("?")}
    assert required, "the database password has no default"
    for name in required:
        assert name in header, f"${{{name}}} is required but not explained"


# ---------------------------------------------------------------------------- image


def test_the_console_script_is_reclaim() -> None:
    import importlib

    target = PYPROJECT["project"]["scripts"]["reclaim"]
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert SERVICES["worker"]["command"][0] == "reclaim"


def test_the_dockerfile_installs_the_project_on_python_311_slim_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    stages = [args.split()[0] for kind, args in instructions if kind == "FROM"]
    assert stages and set(stages) == {"python:3.11-slim"}
    runs = [args for kind, args in instructions if kind == "RUN"]
    assert any(re.search(r"pip install --no-cache-dir(?: --no-deps)? \.(?:\s|$)", run) for run in runs)
    assert any(kind == "COPY" and args.split() == [".", "."] for kind, args in instructions)
    users = [args for kind, args in instructions if kind == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    commands = [args for kind, args in instructions if kind == "CMD"]
    assert json.loads(commands[-1]) == ["reclaim", "worker"]
    assert not [kind for kind, _ in instructions if kind == "ENTRYPOINT"], "compose `command` must replace it all"


def test_the_build_context_leaves_out_local_state_and_keeps_what_the_build_needs() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".reclaim", ".git", "tests", "bench/results", "domain/__pycache__",
                 "store/migrations/__pycache__/env.cpython-311.pyc", ".env"):
        assert ignored_by_docker(path, patterns), path

    setuptools = PYPROJECT["tool"]["setuptools"]
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"]]
    needed += [f"{module}.py" for module in setuptools["py-modules"]]
    needed += [f"{pattern.rstrip('*')}/__init__.py" for pattern in setuptools["packages"]["find"]["include"]]
    for package, files in setuptools.get("package-data", {}).items():
        needed += [f"{package}/{pattern}" for pattern in files if "*" not in pattern]
    for path in needed:
        assert (ROOT / path).exists(), f"the build needs {path}"
        assert not ignored_by_docker(path, patterns), f".dockerignore drops {path}"


def test_the_api_serves_on_8000_and_reads_hashed_tokens_from_a_secret() -> None:
    api = SERVICES["api"]
    assert api["command"] == ["reclaim", "api", "--host", "0.0.0.0", "--port", "8000"]
    assert ("0.0.0.0", 8000, "tcp") in published_ports("api")
    assert environment("api")["RECLAIM_API_TOKENS_FILE"] == "/run/secrets/reclaim_api_tokens"
    assert "reclaim_api_tokens" in [s if isinstance(s, str) else s["source"] for s in api["secrets"]]
    assert COMPOSE["secrets"]["reclaim_api_tokens"]["file"].startswith("${RECLAIM_API_TOKENS_PATH:?")
    assert environment("api")["DATABASE_URL"] == environment("worker")["DATABASE_URL"]


def test_the_workers_together_take_at_most_aws_s_whole_budget() -> None:
    """Each replica spends its share of every AWS bucket: the shares of all replicas add up to at most 1."""
    from runtime.settings import Settings

    replicas = int(COMPOSE["services"]["worker"]["deploy"]["replicas"])
    share = interpolate(str(environment("worker")["RECLAIM_AWS_BUDGET_SHARE"]), {})
    settings = Settings(aws_budget_share=float(share))
    assert settings.aws_budget() is not None
    assert replicas * settings.aws_budget_share <= 1.0 + 1e-9
