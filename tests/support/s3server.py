"""A real S3 API for tests: moto's server on a free loopback port, over plain HTTP.

Use the fixtures from a test module with::

    from tests.support.s3server import s3_bucket, s3_server  # noqa: F401

``s3_server`` (session) starts one server and yields its endpoint URL; ``s3_bucket``
(per test) sets fake credentials in the environment and creates a fresh bucket, so
tests never see each other's objects and never reach real AWS.
"""

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Never pick up a developer's real profile or config.
    "AWS_CONFIG_FILE": "/nonexistent/cairn-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/cairn-test-aws-credentials",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the test server, with a client that talks to it."""

    name: str
    endpoint_url: str
    client: Any

    @property
    def url(self) -> str:
        return f"s3://{self.name}"


def make_client(endpoint_url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
        region_name="us-east-1",
    ).client("s3", endpoint_url=endpoint_url, config=Config(s3={"addressing_style": "path"}))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Start moto's S3 server once per session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    # One log line per request drowns pytest's output on failure.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A new, empty bucket and fake credentials in the environment (restored afterwards)."""
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CAIRN_S3_ENDPOINT_URL", s3_server)
    client = make_client(s3_server)
    name = f"cairn-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    return S3Bucket(name, s3_server, client)
