"""A real, throw-away PostgreSQL server on loopback for the tests (Debian's postgresql binaries).

initdb refuses to run as root, so as root the server runs as the ``postgres`` user. The data
directory and the socket live in one temporary folder that is removed on exit.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    database: str

    def env(self) -> dict[str, str]:
        """The variables `infra/dagster.yaml` reads."""
        return {"CAIRN_PG_HOST": self.host, "CAIRN_PG_PORT": str(self.port), "CAIRN_PG_USER": self.user,
                "CAIRN_PG_PASSWORD": "", "CAIRN_PG_DB": self.database}


def _binaries() -> Path | None:
    for folder in BIN_DIRS:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


@contextlib.contextmanager
def running_postgres(database: str = "dagster") -> Iterator[Postgres]:
    binaries = _binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="cairn-pg-"))
    data = folder / "data"
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    os.chmod(folder, 0o755)
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", "cairn", "-A", "trust", "--no-sync", "-E", "UTF8")
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
            "-o", f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off", "start")
        run(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cairn", database)
        yield Postgres("127.0.0.1", port, "cairn", database)
    finally:
        with contextlib.suppress(Exception):
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        time.sleep(0.1)
        shutil.rmtree(folder, ignore_errors=True)
