"""The citation demo cluster's topology, started as plain processes by `percolator cluster`.

docker-compose.yml describes the same services for Docker; tests/test_compose.py loads
it and checks that it matches :data:`TOPOLOGY` service by service, so the compose demo
and the local launcher cannot drift apart.

Each service is a ``percolator`` subcommand line with placeholders:
``{data}`` the data root, ``{listen}`` the node's listen address, ``{node}`` the
address clients dial.
"""

from __future__ import annotations

from dataclasses import dataclass

NODE_PORT = 7070
DEMO_PAPERS = 20_000


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    args: tuple[str, ...]          # arguments after `percolator`
    replicas: int = 1
    oneshot: bool = False          # runs to completion (exit 0) instead of serving
    depends_on: tuple[str, ...] = ()

    def render(self, **values: str) -> list[str]:
        return [arg.format(**values) for arg in self.args]


TOPOLOGY: tuple[Service, ...] = (
    Service("node", ("serve", "--data-dir", "{data}/node", "--listen", "{listen}")),
    Service("worker", ("worker", "--connect", "{node}", "--observers",
                       "observers.citations:OBSERVERS", "--threads", "4"),
            replicas=2, depends_on=("node",)),
    Service("loader", ("citations", "load", "--generate", str(DEMO_PAPERS), "--seed", "1",
                       "--connect", "{node}"),
            oneshot=True, depends_on=("node", "worker")),
    Service("verify", ("citations", "verify", "--connect", "{node}"),
            oneshot=True, depends_on=("loader",)),
)


def service(name: str) -> Service:
    for s in TOPOLOGY:
        if s.name == name:
            return s
    raise KeyError(name)
