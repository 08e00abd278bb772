"""How Cairn talks to S3: endpoint, bounded timeouts and retries, the client, and reading its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from integrity.errors import ArtifactReadError
from integrity.settings import current

#: Seconds an S3 request may wait for a connection or for the next bytes ($CAIRN_S3_TIMEOUT overrides).
DEFAULT_S3_TIMEOUT = 20.0


#: Attempts per S3 request (the first and the retries): a dead endpoint fails in attempts x timeout.
S3_ATTEMPTS = 3


def s3_timeout() -> float:
    """The per-request S3 timeout in seconds (``$CAIRN_S3_TIMEOUT``, default 20)."""

    return current().s3_timeout


def s3_config(endpoint_url: str | None) -> Any:
    """The botocore configuration of every S3 client Cairn makes: bounded timeouts and retries."""
    from botocore.config import Config

    timeout = s3_timeout()
    return Config(connect_timeout=timeout, read_timeout=timeout,
                  retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"},
                  # Custom endpoints (MinIO, moto, on-premises) rarely have wildcard DNS.
                  s3={"addressing_style": "path" if endpoint_url else "auto"})


def _client_error_code(exc: Any) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _client_error_message(exc: Any) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(exc)


def s3_endpoint(endpoint_url: str | None = None) -> str | None:
    """The S3 endpoint: explicit, else ``$CAIRN_S3_ENDPOINT_URL``, ``$AWS_ENDPOINT_URL_S3``, ``$AWS_ENDPOINT_URL``."""

    return endpoint_url or current().s3_endpoint_url


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client configured like the store's (path-style on custom endpoints, retries)."""
    import boto3

    endpoint = s3_endpoint(endpoint_url)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=s3_config(endpoint))


def list_s3_objects(uri: str) -> dict[str, str]:
    """``s3://`` URL -> ETag of every object under an ``s3://bucket/prefix`` (a vendor drop location)."""
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    found: dict[str, str] = {}
    try:
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/" if prefix else ""):
            for item in page.get("Contents", []):
                found[f"s3://{bucket}/{item['Key']}"] = str(item.get("ETag", "")).strip('"')
    except (BotoCoreError, ClientError) as exc:
        raise ArtifactReadError(f"cannot list the drop location: {exc}", artifact=uri) from exc
    return found


def download_s3(bucket: str, key: str, dest_dir: Path, *, want_file: bool) -> Path:
    """Download an object, or every object under a prefix as a folder, into ``dest_dir`` (vendor drops)."""
    from botocore.exceptions import BotoCoreError, ClientError

    uri = f"s3://{bucket}/{key}"
    try:
        client = s3_client()
        prefix = key.rstrip("/") + "/"
        listed = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/"))
        keys = [o["Key"] for o in listed.get("Contents", [])]
        while listed.get("IsTruncated"):
            listed = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/"),
                                            ContinuationToken=listed["NextContinuationToken"])
            keys += [o["Key"] for o in listed.get("Contents", [])]
        name = key.rstrip("/").rsplit("/", 1)[-1]
        if key.rstrip("/") in keys and not key.endswith("/"):
            target = dest_dir / name
            client.download_file(bucket, key, str(target))
            return target
        members = [k for k in keys if k.startswith(prefix) and not k.endswith("/")]
        if not members or want_file:
            raise ArtifactReadError(f"unreachable URI: no object at {uri}", artifact=uri)
        target = dest_dir / name
        for member in members:
            relative = member[len(prefix):]
            parts = relative.split("/")
            if any(p in ("", ".", "..") for p in parts):
                raise ArtifactReadError(f"unsafe object name {member!r} under the drop", artifact=uri)
            local = target.joinpath(*parts)
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, member, str(local))
        return target
    except (BotoCoreError, ClientError) as exc:
        raise ArtifactReadError(f"unreachable URI: {exc}", artifact=uri) from exc
