"""The citation demo cluster's topology, started as plain processes by `percolator cluster`.

docker-compose.yml describes the same services for Docker; tests/test_compose.py loads
it and checks that it matches :data:`TOPOLOGY` service by service, so the compose demo
and the local launcher cannot drift apart.

Each service is a ``percolator`` subcommand line with placeholders:
``{data}`` the data root, ``{listen}`` the node's listen address, ``{node}`` the
address clients dial, ``{secrets}`` the directory of the dev certificates and tokens,
``{host}`` the name clients reach the node by (in its certificate).

Security is on as in production: the first service makes a CA, the node's certificate
and a token per role (``percolator dev-secrets``, kept across restarts); the node serves
TLS and requires tokens; every client trusts the CA and sends a token.  Workers, the
loader and the verifier hold the ``write`` token: registering columns, pulling, parking
and reporting counters are the node's notification verbs (docs/security.md), and no
client writes anything raw.
"""

from __future__ import annotations

from dataclasses import dataclass

NODE = "node"
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


def _client(role: str) -> tuple[str, ...]:
    return ("--connect", "{node}", "--tls-ca", "{secrets}/ca.pem",
            "--token-file", f"{{secrets}}/{role}.token")


TOPOLOGY: tuple[Service, ...] = (
    Service("secrets", ("dev-secrets", "--dir", "{secrets}", "--host", "{host}"),
            oneshot=True),
    Service(NODE, ("serve", "--data-dir", "{data}/node", "--listen", "{listen}",
                   "--tls-cert", "{secrets}/node.pem", "--tls-key", "{secrets}/node.key",
                   "--auth-tokens", "{secrets}/tokens"),
            depends_on=("secrets",)),
    Service("worker", ("worker", *_client("write"), "--observers",
                       "observers.citations:OBSERVERS", "--threads", "4"),
            replicas=2, depends_on=(NODE,)),
    Service("loader", ("citations", "load", "--generate", str(DEMO_PAPERS), "--seed", "1",
                       *_client("write")),
            oneshot=True, depends_on=(NODE, "worker")),
    Service("verify", ("citations", "verify", *_client("write")),
            oneshot=True, depends_on=("loader",)),
)


def service(name: str) -> Service:
    for s in TOPOLOGY:
        if s.name == name:
            return s
    raise KeyError(name)
