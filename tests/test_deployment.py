"""The deployment files: docker-compose.yml, Dockerfile, Makefile (read, not run: no container engine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())  # merges `<<` anchors
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
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.M)
    assert users and users[-1] not in ("0", "root")
    assert "HEALTHCHECK" in dockerfile


def test_compose_mounts_only_folders_of_the_repository_read_only() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source, mode = str(volume).split(":")[0], str(volume).rsplit(":", 1)[-1]
            if source.startswith((".", "/")):
                assert (REPO / source).is_dir(), f"{name} mounts {source}, which the repository lacks"
                assert mode == "ro", volume


def test_dockerfile_pulls_nothing_it_does_not_need_and_takes_torch_from_a_build_argument() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "# syntax=" not in dockerfile  # BuildKit would pull a frontend image for nothing
    assert re.search(r"^ARG TORCH_INDEX_URL=", dockerfile, flags=re.M)
    assert "--mount=type=bind,source=wheels" in dockerfile and (REPO / "wheels").is_dir()
    assert "python -m app.prewarm" in dockerfile and "NUMBA_CACHE_DIR" in dockerfile


def test_make_uses_a_project_virtualenv() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^VENV \?= \.venv$", makefile, flags=re.M)
    for target in ("serve", "test"):
        recipe = re.search(rf"^{target}: install\n\t(.+)$", makefile, flags=re.M)
        assert recipe and recipe.group(1).startswith(("$(VENV)/bin/", "$(PY) ")), target
    assert (REPO / ".ci" / "run").read_text().rstrip().endswith("make test")
