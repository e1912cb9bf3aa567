"""docker-compose.yml describes the same cluster that `percolator cluster` starts locally.

There is no Docker engine in CI, so the compose file is loaded and compared, service by
service, with observers.citations.cluster.TOPOLOGY: same services, same commands (with the
compose host names in place of the local addresses), same replicas, same order of
dependencies, one-shots marked as such.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from observers.citations.cluster import NODE_PORT, TOPOLOGY

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_VALUES = {"data": "/data", "listen": f"0.0.0.0:{NODE_PORT}", "node": f"node:{NODE_PORT}"}


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_exactly_the_launcher_services() -> None:
    assert list(compose()["services"]) == [s.name for s in TOPOLOGY]


def test_each_service_runs_the_launcher_command() -> None:
    services = compose()["services"]
    for s in TOPOLOGY:
        assert services[s.name]["command"] == s.render(**COMPOSE_VALUES), s.name


def test_replicas_dependencies_and_one_shots_match() -> None:
    services = compose()["services"]
    for s in TOPOLOGY:
        spec = services[s.name]
        assert spec.get("deploy", {}).get("replicas", 1) == s.replicas, s.name
        assert sorted(spec.get("depends_on", {})) == sorted(s.depends_on), s.name
        assert (spec.get("restart") == "no") == s.oneshot, s.name


def test_every_service_uses_the_project_image_and_commands_exist() -> None:
    from percolator.cli import installed_commands

    names = set(installed_commands())
    for s in TOPOLOGY:
        assert compose()["services"][s.name]["build"] == "."
        assert s.args[0] in names, f"{s.name} runs unknown command {s.args[0]!r}"


def test_the_dockerfile_installs_the_project_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and 'ENTRYPOINT ["percolator"]' in dockerfile
    for package in ("bigtable_lite", "percolator", "observers"):
        assert f"COPY {package}" in dockerfile
