"""Real parts the tests run against (S3 server, PostgreSQL, Dagster webserver, private Sigstore, PKI)."""

import socket


def free_port() -> int:
    """A loopback TCP port nobody is listening on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
