"""The deployment files, checked without a Docker engine.

hadolint lints the Dockerfile; Debian's `docker-compose` (1.29, installed by
scripts/system-deps) validates and resolves docker-compose.yml. Both files must
agree with each other and with `app.config.Settings`, whose `LOOKALIKE_`
variables they set. A missing tool fails these tests, it never skips them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
SYSTEM_DEPS = ROOT / "scripts" / "system-deps"

IMAGE_ROOT = "/srv/lookalike"
MODELS = f"{IMAGE_ROOT}/models"
DATA = f"{IMAGE_ROOT}/data"
SERVE = ["python", "-m", "app", "serve"]
TRAIN = ["python", "-m", "training", "train", "--out", f"{MODELS}/default"]

API_SERVICES = ["lookalike", "api-1", "api-2"]
MILVUS_STACK = ["etcd", "minio", "milvus"]
HOST_ENV = {"LOOKALIKE_API_KEY": "key-one,key-two", "LOOKALIKE_MILVUS_TOKEN": "root:Milvus"}

SYSTEM_DEPS_HINT = "run scripts/system-deps (as root or with sudo) to install it"
DEV_HINT = "install the dev extra: pip install -c constraints.txt -e '.[dev]'"


def _tool(name: str, hint: str) -> str:
    """The venv's copy of a tool (next to this Python), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: {hint}", pytrace=False)
    return found


def _run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


# --- Dockerfile ----------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, FROM first; stage 0 is what precedes any FROM."""
    stages: list[list[tuple[str, str]]] = [[]]
    for keyword, arguments in _instructions():
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, arguments))
    return stages


def _dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for item in shlex.split(arguments):
                name, equals, value = item.partition("=")
                assert equals, f"use the ENV key=value form, not {arguments!r}"
                env[name] = value
    return env


def _arguments(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for word, arguments in stage if word == keyword]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint", DEV_HINT)
    result = _run([hadolint, "Dockerfile"])
    findings = (result.stdout + result.stderr).strip()
    # Rules are ignored only in .hadolint.yaml or inline, each with its reason.
    assert result.returncode == 0, f"hadolint:\n{findings}"
    assert not findings, f"hadolint:\n{findings}"


def test_dockerfile_builds_slim_multi_stage_non_root_image() -> None:
    preamble, *stages = _stages()
    assert len(stages) >= 2, "expected a builder stage and a final stage"
    defaults = dict(arg.partition("=")[::2] for arg in _arguments(preamble, "ARG"))

    def base(from_arguments: str) -> str:
        image = from_arguments.split()[0]
        return re.sub(r"\$\{(\w+)\}", lambda match: defaults[match.group(1)], image)

    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base(stage[0][1])), stage[0]
    builder, final = stages[0], stages[-1]
    assert builder[0][1].split()[-2:] == ["AS", "builder"]
    installs = " ".join(_arguments(builder, "RUN"))
    assert "pip install --no-cache-dir -c constraints.txt" in installs
    assert ".[milvus]" in installs

    assert any(arguments.startswith("--from=builder ") for arguments in _arguments(final, "COPY"))
    user = _arguments(final, "USER")[-1].split(":")[0]
    assert user not in {"root", "0"}, "the image must run as a non-root user"
    assert _arguments(final, "WORKDIR")[-1] == IMAGE_ROOT
    assert json.loads(_arguments(final, "VOLUME")[-1]) == [MODELS, DATA]
    assert _arguments(final, "EXPOSE") == ["8000"]
    assert json.loads(_arguments(final, "CMD")[-1]) == SERVE

    healthcheck = _arguments(final, "HEALTHCHECK")[-1]
    assert "urllib.request" in healthcheck
    assert "http://127.0.0.1:" in healthcheck
    assert "/healthz" in healthcheck

    env = _dockerfile_env(final)
    assert (
        env.items()
        >= {
            "LOOKALIKE_HOST": "0.0.0.0",
            "LOOKALIKE_MODEL_DIR": f"{MODELS}/default",
            "LOOKALIKE_DATA_DIR": DATA,
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }.items()
    )


def test_dockerfile_copies_files_that_exist_and_are_not_dockerignored() -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    for stage in _stages()[1:]:
        for arguments in _arguments(stage, "COPY"):
            if arguments.startswith("--from="):
                continue  # from another stage, not from the build context
            words = [word for word in shlex.split(arguments) if not word.startswith("--")]
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
                hits = [pattern for pattern in ignored if fnmatch.fnmatch(source, pattern)]
                assert not hits, f"COPY {source} is excluded by .dockerignore {hits}"


def test_dockerignore_keeps_state_and_tooling_out_of_the_build_context() -> None:
    ignored = set(DOCKERIGNORE.read_text(encoding="utf-8").split())
    assert {".git", ".venv", "models", "data", ".env", "**/__pycache__"} <= ignored
    assert {".pytest_cache", ".mypy_cache", ".ruff_cache", "test-artifacts"} <= ignored


def test_dockerfile_defaults_are_valid_settings() -> None:
    settings = _settings_from(_dockerfile_env(_stages()[-1]))
    assert settings.host == "0.0.0.0"
    assert settings.port == 8000
    assert settings.model_dir == Path(MODELS, "default")
    assert settings.data_dir == Path(DATA)


# --- docker-compose.yml --------------------------------------------------------


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("", encoding="utf-8")
    return path


def _compose(
    env_file: Path, *arguments: str, host_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Debian's docker-compose on our file, isolated from the caller's own Compose setup.

    `env_file` replaces a developer's .env, so that ${...} values come from `host_env` alone.
    """
    compose = _tool("docker-compose", SYSTEM_DEPS_HINT)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("COMPOSE_", "LOOKALIKE_"))
    }
    env.update(host_env or {})
    options = ["--file", str(COMPOSE_FILE), "--project-directory", str(ROOT)]
    return _run([compose, *options, "--env-file", str(env_file), *arguments], env=env)


@pytest.fixture(scope="module")
def config(empty_env_file: Path) -> dict[str, Any]:
    """The resolved compose file with every profile on and the host's keys set."""
    all_profiles = ["--profile", "train", "--profile", "milvus"]
    result = _compose(empty_env_file, *all_profiles, "config", host_env=HOST_ENV)
    assert result.returncode == 0, result.stderr
    parsed = yaml.safe_load(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


def _service(config: dict[str, Any], name: str) -> dict[str, Any]:
    service = config["services"][name]
    assert isinstance(service, dict)
    return service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (host path or volume name, read-only), short or long syntax."""
    mounts: dict[str, tuple[str, bool]] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts[target] = (source, "ro" in ",".join(mode).split(","))
        else:
            mounts[volume["target"]] = (volume.get("source", ""), bool(volume.get("read_only")))
    return mounts


def _ports(service: dict[str, Any]) -> dict[int, int]:
    """Host port -> container port, short or long syntax."""
    ports: dict[int, int] = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports[int(port["published"])] = int(port["target"])
        else:
            *_, published, target = str(port).split("/")[0].split(":")
            ports[int(published)] = int(target)
    return ports


def _healthcheck_command(service: dict[str, Any]) -> str:
    healthcheck = service.get("healthcheck") or {}
    test = healthcheck.get("test", [])
    assert not healthcheck.get("disable"), "healthcheck disabled"
    assert test, "no healthcheck"
    assert test[0] != "NONE", "healthcheck disabled"
    return " ".join(test) if isinstance(test, list) else str(test)


@pytest.mark.parametrize(
    "profiles", [[], ["train"], ["milvus"]], ids=["default", "train", "milvus"]
)
def test_compose_file_is_valid(profiles: list[str], empty_env_file: Path) -> None:
    flags = [word for profile in profiles for word in ("--profile", profile)]
    result = _compose(empty_env_file, *flags, "config", "--quiet")
    assert result.returncode == 0, result.stderr
    # Warnings come only without --quiet, e.g. "The X variable is not set. Defaulting to a
    # blank string.": every ${X} needs an explicit default.
    result = _compose(empty_env_file, *flags, "config")
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr
    assert isinstance(yaml.safe_load(result.stdout)["services"], dict)


def test_compose_services_and_profiles(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"lookalike", "train", *MILVUS_STACK, "api-1", "api-2"}
    assert "profiles" not in services["lookalike"], "plain `docker compose up` runs the service"
    assert services["train"]["profiles"] == ["train"]
    for name in [*MILVUS_STACK, "api-1", "api-2"]:
        assert services[name]["profiles"] == ["milvus"], name
    assert set(config["volumes"]) >= {"lookalike-data"}


def test_api_services_run_the_image_with_models_and_data(config: dict[str, Any]) -> None:
    host_models = str(ROOT / "models")
    for name, host_port in zip(API_SERVICES, [8000, 8001, 8002], strict=True):
        service = _service(config, name)
        assert service["build"]["context"] == str(ROOT), name
        assert "command" not in service, f"{name} must run the image's CMD {SERVE}"
        assert service["restart"] == "unless-stopped", name
        assert _ports(service) == {host_port: 8000}, name
        mounts = _mounts(service)
        assert mounts[MODELS] == (host_models, True), f"{name}: ./models read-only at {MODELS}"
        data_volume, read_only = mounts[DATA]
        assert data_volume in config["volumes"], f"{name}: {DATA} on a named volume"
        assert not read_only, name
        assert "/healthz" in _healthcheck_command(service), name
    assert _mounts(_service(config, "lookalike"))[DATA][0] == "lookalike-data"


def test_train_job_writes_the_model_the_service_loads(config: dict[str, Any]) -> None:
    train, serve = _service(config, "train"), _service(config, "lookalike")
    assert train["command"] == TRAIN
    assert train["restart"] == "no"
    assert train["image"] == serve["image"]
    assert train["build"] == serve["build"]
    assert _mounts(train)[MODELS] == (str(ROOT / "models"), False), "train must write ./models"
    assert _mounts(serve)[MODELS][0] == _mounts(train)[MODELS][0]
    served = _settings_from(_dockerfile_env(_stages()[-1]) | _environment(serve))
    assert str(served.model_dir) == TRAIN[-1]


def test_api_key_comes_from_the_host_environment(config: dict[str, Any]) -> None:
    for name in API_SERVICES:
        assert _environment(_service(config, name))["LOOKALIKE_API_KEY"] == "key-one,key-two"
    assert "LOOKALIKE_API_KEY" not in _environment(_service(config, "train"))


def test_milvus_replicas_share_one_collection(config: dict[str, Any]) -> None:
    milvus = _service(config, "milvus")
    assert re.fullmatch(r"milvusdb/milvus:v2\.5\.\d+", milvus["image"])
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert (
        _environment(milvus).items()
        >= {
            "ETCD_ENDPOINTS": "etcd:2379",
            "MINIO_ADDRESS": "minio:9000",
        }.items()
    )
    assert milvus["depends_on"] == {
        "etcd": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
    }
    assert re.fullmatch(r"quay\.io/coreos/etcd:v3\.5\.\d+", _service(config, "etcd")["image"])
    assert re.fullmatch(r"minio/minio:RELEASE\.[0-9TZ-]+", _service(config, "minio")["image"])
    for name in MILVUS_STACK:
        assert _healthcheck_command(_service(config, name)), name

    replicas = [_environment(_service(config, name)) for name in ("api-1", "api-2")]
    for name, environment in zip(("api-1", "api-2"), replicas, strict=True):
        assert _service(config, name)["depends_on"] == {"milvus": {"condition": "service_healthy"}}
        assert environment["LOOKALIKE_BACKEND"] == "milvus", name
        assert environment["LOOKALIKE_MILVUS_URI"] == "http://milvus:19530", name
        assert environment["LOOKALIKE_MILVUS_TOKEN"] == "root:Milvus", name
    assert replicas[0] == replicas[1]


# --- both files against the settings --------------------------------------------


def _settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    assert prefix == "LOOKALIKE_"
    return {f"{prefix}{field.upper()}" for field in Settings.model_fields}


def _settings_from(env: dict[str, str]) -> Settings:
    """Settings as the container would build them from `env` (no .env file, no host vars)."""
    values = {name: value for name, value in env.items() if name.startswith("LOOKALIKE_")}
    unknown = set(values) - _settings_env_names()
    assert not unknown, f"not fields of app.config.Settings: {sorted(unknown)}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(Settings.model_config, "env_file", None)  # a developer's .env
        for name in os.environ:
            if name.startswith("LOOKALIKE_"):
                patch.delenv(name)
        for name, value in values.items():
            patch.setenv(name, value)
        return Settings()


@pytest.mark.parametrize("path", [DOCKERFILE, COMPOSE_FILE], ids=lambda path: path.name)
def test_every_lookalike_variable_is_a_setting(path: Path) -> None:
    mentioned = set(re.findall(r"\bLOOKALIKE_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
    assert mentioned, f"{path.name} sets no LOOKALIKE_ variable"
    unknown = mentioned - _settings_env_names()
    assert not unknown, f"{path.name} mentions variables Settings does not read: {sorted(unknown)}"


def test_compose_environments_are_valid_settings(config: dict[str, Any]) -> None:
    image_env = _dockerfile_env(_stages()[-1])
    for name in [*API_SERVICES, "train"]:
        settings = _settings_from(image_env | _environment(_service(config, name)))
        assert settings.host == "0.0.0.0", name
        assert settings.data_dir == Path(DATA), name
    assert _settings_from(image_env | _environment(_service(config, "api-1"))).backend == "milvus"


# --- scripts/system-deps ----------------------------------------------------------


def test_system_deps_script_is_valid_bash() -> None:
    assert os.access(SYSTEM_DEPS, os.X_OK), "scripts/system-deps must be executable"
    result = _run(["bash", "-n", str(SYSTEM_DEPS)])
    assert result.returncode == 0, result.stderr


def test_system_packages_are_installed() -> None:
    result = _run([str(SYSTEM_DEPS), "--check"])
    assert result.returncode == 0, f"{result.stdout.strip()}: {SYSTEM_DEPS_HINT}"
