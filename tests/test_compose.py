"""docker-compose.yml describes the same cluster that `percolator cluster` starts locally.

There is no Docker engine in CI, so the compose file is loaded and compared, service by
service, with observers.citations.cluster.TOPOLOGY: same services, same commands (with the
compose host names in place of the local addresses), same replicas, same order of
dependencies, one-shots marked as such.  And it is safe to run: TLS and tokens on, the
port published on the host's loopback only, containers not running as root.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from observers.citations.cluster import NODE, NODE_PORT, TOPOLOGY

ROOT = Path(__file__).resolve().parents[1]
SECRETS = "/secrets"
COMPOSE_VALUES = {"data": "/data", "listen": f"0.0.0.0:{NODE_PORT}", "node": f"node:{NODE_PORT}",
                  "secrets": SECRETS, "host": "node"}


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


def test_the_node_serves_tls_and_tokens_on_the_hosts_loopback_only() -> None:
    node = compose()["services"][NODE]
    command = node["command"]
    for flag in ("--tls-cert", "--tls-key", "--auth-tokens"):
        assert flag in command
    assert "--insecure" not in command
    assert node["ports"] == [f"127.0.0.1:{NODE_PORT}:{NODE_PORT}"]
    assert SECRETS in node["healthcheck"]["test"][-1]  # the probe speaks TLS too


def test_every_client_trusts_the_ca_and_sends_a_token() -> None:
    services = compose()["services"]
    for s in TOPOLOGY:
        command = services[s.name]["command"]
        if "--connect" in command:
            assert command[command.index("--tls-ca") + 1] == f"{SECRETS}/ca.pem", s.name
            assert command[command.index("--token-file") + 1].startswith(SECRETS), s.name


def test_services_that_use_the_secrets_mount_them() -> None:
    services = compose()["services"]
    for s in TOPOLOGY:
        spec = services[s.name]
        if any(SECRETS in arg for arg in spec["command"]):
            assert any(v.split(":")[1] == SECRETS for v in spec.get("volumes", [])), s.name
    assert "percolator-secrets" in compose()["volumes"]


def test_containers_do_not_run_as_root() -> None:
    users = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    for name, spec in compose()["services"].items():
        assert spec.get("user") in (None, users[-1]), name
