"""The deployment files: docker-compose.yml, Dockerfile, Makefile, pyproject.toml (read, not run)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from model.paths import REPO_ROOT


def compose() -> dict[str, Any]:
    # safe_load merges `<<` anchors
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return data


def test_redis_has_a_memory_bound_and_refuses_writes_at_it() -> None:
    command = [str(part) for part in compose()["services"]["redis"]["command"]]
    bound = command[command.index("--maxmemory") + 1]
    assert re.fullmatch(r"\$\{REDIS_MAXMEMORY:-\d+[kmg]b\}", bound), bound
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"  # the durability the README promises


def test_every_service_has_a_health_check_and_runs_as_a_non_root_user() -> None:
    for name, service in compose()["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and check.get("interval"), name
        user = str(service.get("user", "")).split(":")[0]
        assert user and user not in ("0", "root"), f"{name} runs as {user or 'the image default'}"
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.M)
    assert users and users[-1] not in ("0", "root")
    assert "HEALTHCHECK" in dockerfile


def test_compose_mounts_only_folders_of_the_repository_read_only() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source, mode = str(volume).split(":")[0], str(volume).rsplit(":", 1)[-1]
            if source.startswith((".", "/")):
                assert (REPO_ROOT / source).is_dir(), f"{name} mounts {source}, which the repository lacks"
                assert mode == "ro", volume


def test_dockerfile_pulls_nothing_it_does_not_need_and_takes_torch_from_a_build_argument() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "# syntax=" not in dockerfile  # BuildKit would pull a frontend image for nothing
    assert re.search(r"^ARG TORCH_INDEX_URL=", dockerfile, flags=re.M)
    assert "--mount=type=bind,source=wheels" in dockerfile and (REPO_ROOT / "wheels").is_dir()
    assert "python -m app.prewarm" in dockerfile and "NUMBA_CACHE_DIR" in dockerfile


def test_make_uses_a_project_virtualenv() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^VENV \?= \.venv$", makefile, flags=re.M)
    for target in ("serve", "test"):
        recipe = re.search(rf"^{target}: install\n\t(.+)$", makefile, flags=re.M)
        assert recipe and recipe.group(1).startswith(("$(VENV)/bin/", "$(PY) ")), target
    assert (REPO_ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


def test_dockerfile_base_image_is_a_build_argument_defaulting_to_the_official_python() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, flags=re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, flags=re.M)
    assert (REPO_ROOT / "scripts" / "debian_base.sh").is_file()  # the local stand-in the README documents


# packages the service never imports, and the only modules allowed to import them
OPTIONAL_IMPORTS = {
    "matplotlib": ("model/plots.py",),  # training figures, [train]
    "sklearn": (),  # tests only, [dev]
    # a dependency since session 15 (the default's voice expert reads eGeMAPS), still read in one place
    "opensmile": ("model/encoders/egemaps.py",),
}


def test_the_image_dependency_set_leaves_out_training_and_test_only_packages() -> None:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=!\[; ]", r)[0].lower() for r in project["dependencies"]}
    assert not runtime & {"matplotlib", "scikit-learn"}, runtime
    assert "opensmile" in runtime  # the committed checkpoints' voice expert needs it to serve at all
    extras = project["optional-dependencies"]
    assert any(r.startswith("matplotlib") for r in extras["train"])
    # `make test` installs .[dev]: it must still get all of them
    assert "lpgnet-erc[train,egemaps]" in extras["dev"]
    assert any(r.startswith("scikit-learn") for r in extras["dev"])


def test_service_code_imports_optional_packages_only_where_allowed() -> None:
    for folder in ("app", "model", "bench"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            source = path.read_text()
            for module, allowed in OPTIONAL_IMPORTS.items():
                if re.search(rf"^\s*(import|from) {module}\b", source, flags=re.M):
                    assert str(path.relative_to(REPO_ROOT)) in allowed, f"{path} imports {module}"
