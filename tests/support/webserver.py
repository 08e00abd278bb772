"""The real Dagster webserver on a loopback port, for tests that read the UI or its GraphQL API."""

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"


@contextlib.contextmanager
def running_webserver(env: Mapping[str, str], log_path: Path, *, start_timeout: float = 180) -> Iterator[int]:
    """Serve workspace.yaml with ``env`` added to the environment; yields the port once it answers."""
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(WEBSERVER), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env={**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1", **env}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.close()
                pytest.fail("webserver did not start:\n" + log_path.read_text()[-4000:])
            time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
