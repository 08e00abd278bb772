"""The S3 store backend (boto3): conditional writes, multipart uploads, Object Lock, presigned URLs."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from integrity.errors import (
    DigestMismatchError,
    StoreError,
    UsageError,
)
from integrity.storage.base import (
    CHUNK,
    Backend,
    BlobWrite,
    MissingObjectError,
    _check_regular_file,
    _mismatch_on_put,
    _read_exactly,
    _read_source,
    _safe_key_parts,
)
from integrity.storage.s3_api import S3_ATTEMPTS, _client_error_code, _client_error_message, s3_config, s3_timeout

#: Objects larger than this are uploaded to S3 in parts.
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024


#: Size of one multipart part (S3's minimum is 5 MiB, except for the last part).
DEFAULT_MULTIPART_CHUNKSIZE = 16 * 1024 * 1024


#: Parts of one object uploaded at the same time (memory use is about this many parts).
DEFAULT_MAX_CONCURRENCY = 4


#: S3 refuses uploads with more parts than this.
S3_MAX_PARTS = 10_000


def _b64(digest_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(digest_hex)).decode("ascii")


class S3Backend(Backend):
    """An S3 bucket and prefix, through boto3 (credentials from the usual AWS sources).

    Small objects are sent in one PUT; larger ones (``multipart_threshold``) in parts that
    are hashed as they are read, and the upload is completed only if the whole object
    matched its address (otherwise aborted, so nothing becomes visible). New objects are
    written with ``If-None-Match: *``; where a service rejects that header the backend
    falls back to checking with HEAD first.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        conditional_writes: bool = True,
    ) -> None:
        if not bucket:
            raise UsageError("an S3 store needs a bucket name (s3://bucket/prefix)")
        if multipart_chunksize < 5 * 1024 * 1024:
            raise UsageError("multipart_chunksize must be at least 5 MiB (S3's minimum part size)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.max_concurrency = max(1, max_concurrency)
        #: Cleared the first time the service rejects ``If-None-Match``.
        self.conditional_writes = conditional_writes
        if client is None:
            # boto3 is a heavy import: pay for it only when an S3 store is opened.
            import boto3

            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region_name, config=s3_config(endpoint_url)
            )
        self.client = client
        self._presigner: Any = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def full_key(self, key: str) -> str:
        """The S3 object key for a store key."""
        _safe_key_parts(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def _fail(self, exc: Exception, action: str, key: str) -> StoreError:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | BotoConnectionError):
            return StoreError(
                f"S3 {action} timed out: the endpoint did not answer within {s3_timeout():g} s "
                f"({S3_ATTEMPTS} attempts; {type(exc).__name__})", artifact=self.describe(key),
                advice="Check that the S3 endpoint is up and reachable; raise $CAIRN_S3_TIMEOUT for a slow link.")
        code, _ = _client_error_code(exc)
        detail = f"{code}: {_client_error_message(exc)}" if code else str(exc)
        return StoreError(
            f"S3 {action} failed ({detail})",
            artifact=self.describe(key),
            advice="Check the bucket, the endpoint URL and the AWS credentials and permissions.",
        )

    @staticmethod
    def _is_precondition_failed(exc: Any) -> bool:
        code, status = _client_error_code(exc)
        return code == "PreconditionFailed" or status == 412

    @staticmethod
    def _is_condition_unsupported(exc: Any) -> bool:
        code, status = _client_error_code(exc)
        if code == "NotImplemented" or status == 501:
            return True
        message = _client_error_message(exc).lower()
        return code in ("InvalidArgument", "InvalidRequest") and (
            "if-none-match" in message or "conditional" in message
        )

    def move(self, key: str, dest: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.copy_object(Bucket=self.bucket, Key=self.full_key(dest),
                                    CopySource={"Bucket": self.bucket, "Key": self.full_key(key)})
            self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "move", key) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            code, status = _client_error_code(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(exc, "HEAD", key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "HEAD", key) from exc
        return True

    def _create_only(self, key: str, send: Callable[[dict[str, Any]], Any], action: str) -> bool:
        """Run a write that must not replace an existing object; False if one is there."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.conditional_writes:
            try:
                send({"IfNoneMatch": "*"})
                return True
            except ClientError as exc:
                if self._is_precondition_failed(exc):
                    return False
                code, status = _client_error_code(exc)
                if code == "ConditionalRequestConflict" or status == 409:
                    # A concurrent conditional write to the same key: it wins or fails on its own.
                    if self.exists(key):
                        return False
                    raise self._fail(exc, action, key) from exc
                if not self._is_condition_unsupported(exc):
                    raise self._fail(exc, action, key) from exc
                self.conditional_writes = False
            except BotoCoreError as exc:
                raise self._fail(exc, action, key) from exc
        # Fallback for services without conditional writes: check first (a race can still
        # write the same address twice, which content addressing makes the same bytes).
        if self.exists(key):
            return False
        try:
            send({})
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, action, key) from exc
        return True

    def _put_object(self, key: str, data: bytes, *, digest: str | None, overwrite: bool) -> bool:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.full_key(key),
            "Body": data,
            # S3 recomputes this and rejects the PUT if the body was damaged in transit.
            "ChecksumSHA256": _b64(hashlib.sha256(data).hexdigest()),
        }
        if digest is not None:
            params["Metadata"] = {"sha256": digest}

        def send(extra: dict[str, Any]) -> Any:
            return self.client.put_object(**params, **extra)

        if overwrite:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                send({})
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "PUT", key) from exc
            return True
        return self._create_only(key, send, "PUT")

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        return self._put_object(key, data, digest=None, overwrite=overwrite)

    def put_blob(self, source: Path, expected: str | None, key_of: Callable[[str], str]) -> BlobWrite:
        size = _check_regular_file(source).st_size
        if size <= self.multipart_threshold:
            # Small enough to hold: read once, hash, then a single all-or-nothing PUT.
            data = b"".join(_read_source(source))
            digest = hashlib.sha256(data).hexdigest()
            if expected is not None and digest != expected:
                raise _mismatch_on_put(source, digest, expected)
            key = key_of(digest)
            created = self._put_object(key, data, digest=digest, overwrite=False)
            return BlobWrite(key, digest, len(data), created)
        if expected is None:
            # The address must be known before a multipart upload starts: hash first, then
            # hash again while uploading so a file that changes in between is refused.
            hasher = hashlib.sha256()
            for chunk in _read_source(source, 4 * CHUNK):
                hasher.update(chunk)
            target = hasher.hexdigest()
        else:
            target = expected
        key = key_of(target)
        if self.exists(key):
            return BlobWrite(key, target, size, False)
        written, created = self._multipart(key, source, size, target, pinned=expected is not None)
        return BlobWrite(key, target, written, created)

    def _multipart(self, key: str, source: Path, size: int, digest: str, *, pinned: bool) -> tuple[int, bool]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self.full_key(key)
        try:
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, ChecksumAlgorithm="SHA256", Metadata={"sha256": digest}
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "CreateMultipartUpload", key) from exc
        upload_id = upload["UploadId"]
        completed = False
        try:
            part_size = max(self.multipart_chunksize, math.ceil(size / S3_MAX_PARTS))
            hasher = hashlib.sha256()
            parts: list[dict[str, Any]] = []
            pending: deque[Future[dict[str, Any]]] = deque()
            written = 0
            chunks = _read_source(source, CHUNK)
            carry = bytearray()
            with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="cairn-s3") as pool:
                number = 0
                while True:
                    body = _read_exactly(chunks, part_size, carry)
                    if not body and number:
                        break
                    number += 1
                    hasher.update(body)
                    written += len(body)
                    pending.append(pool.submit(self._upload_part, key, upload_id, number, body))
                    # Bound memory: at most max_concurrency parts in flight.
                    while len(pending) >= self.max_concurrency:
                        parts.append(pending.popleft().result())
                    if len(body) < part_size:
                        break
                while pending:
                    parts.append(pending.popleft().result())
            actual = hasher.hexdigest()
            if actual != digest:
                if pinned:
                    raise _mismatch_on_put(source, actual, digest)
                raise DigestMismatchError("file changed while it was uploaded; nothing was stored", artifact=source)

            def send(extra: dict[str, Any]) -> Any:
                return self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **extra,
                )

            created = self._create_only(key, send, "CompleteMultipartUpload")
            completed = created
            return written, created
        finally:
            if not completed:
                self._abort(full, upload_id)

    def _upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        checksum = _b64(hashlib.sha256(body).hexdigest())
        try:
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.full_key(key),
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumSHA256=checksum,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"UploadPart {number}", key) from exc
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _abort(self, full: str, upload_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        # Best effort: the original error matters more; a lifecycle rule cleans up the rest.
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)

    def read_chunks(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            code, status = _client_error_code(exc)
            if status == 404 or code in ("NoSuchKey", "NotFound", "404"):
                raise MissingObjectError("not in the store", artifact=self.describe(key)) from exc
            raise self._fail(exc, "GET", key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "GET", key) from exc
        body = response["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, OSError) as exc:
            raise self._fail(exc, "GET", key) from exc
        finally:
            body.close()

    # -- capabilities ----------------------------------------------------------------------------------

    capabilities = frozenset({"conditional-writes", "object-lock", "presigned-urls", "versioning", "ranged-reads"})

    def download(self, key: str, dest: Path, progress: Callable[[int], None], *, connections: int = 1) -> None:
        size_for_ranges = 8 * 1024 * 1024
        if connections <= 1:
            super().download(key, dest, progress)
            return
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        config = TransferConfig(multipart_threshold=size_for_ranges, multipart_chunksize=size_for_ranges,
                                max_concurrency=connections, use_threads=True)
        try:
            self.client.download_file(self.bucket, self.full_key(key), str(dest), Config=config, Callback=progress)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise MissingObjectError("not in the store", artifact=self.describe(key)) from exc
            raise StoreError(f"S3 download failed ({code}: {exc})", artifact=self.describe(key)) from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 download failed ({exc})", artifact=self.describe(key)) from exc

    def object_lock_enabled(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError:
            return False
        except BotoCoreError as exc:
            raise StoreError(f"cannot read the bucket's Object Lock configuration: {exc}", artifact=self.url) from exc
        return bool(config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def retain(self, key: str, mode: str, until: datetime) -> dict[str, str]:
        """Set or extend retention; what S3 reports is read back with ``head_object``."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = self.full_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full)
            current = head.get("ObjectLockRetainUntilDate")
            if current is None or current < until - timedelta(days=1):
                self.client.put_object_retention(Bucket=self.bucket, Key=full,
                                                 Retention={"Mode": mode, "RetainUntilDate": until})
                head = self.client.head_object(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot set Object Lock retention: {exc}", artifact=self.describe(key)) from exc
        held_mode, date = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        if not held_mode or date is None:
            raise StoreError("S3 accepted the retention but head_object reports none", artifact=self.describe(key))
        return {"mode": str(held_mode), "retain_until": date.isoformat()}

    def retention(self, key: str) -> dict[str, str] | None:
        """From ``head_object`` (moto's ``get_object_retention`` is broken)."""
        head = self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        if not head.get("ObjectLockMode"):
            return None
        return {"mode": str(head["ObjectLockMode"]), "retain_until": head["ObjectLockRetainUntilDate"].isoformat()}

    def presign_get(self, key: str, expires_in: int) -> str:
        """Signed with Signature Version 4 (the only kind AWS accepts for new buckets)."""
        if self._presigner is None:
            import boto3
            from botocore.config import Config

            config = Config(signature_version="s3v4", s3={"addressing_style": "path" if self.endpoint_url else "auto"})
            self._presigner = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.client.meta.region_name, config=config)
        url: str = self._presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.full_key(key)}, ExpiresIn=expires_in)
        return url

    def list_keys(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self.prefix) + 1 if self.prefix else 0
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "LIST", prefix) from exc
        return iter(sorted(keys))


