"""Blobs as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...).

The bucket only ever sees sealed bytes under random names, so it is trusted for
availability, not for confidentiality or integrity: every object is decrypted and
verified on the way back, and a swapped, altered or truncated object is refused like a
damaged local file. Credentials come from boto3's usual chain (environment, profile,
instance role), never from ``sealml.toml``. A blob is uploaded in one request or, above
one part, as a multipart upload; either way the object appears under its final name only
when complete, and an abandoned upload is aborted.
"""

from __future__ import annotations

import contextlib
import io
import re
import secrets
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import AuthenticationError, ConfigError, IntegrityError, UsageError
from ..urls import transport_is_protected
from .blobs import NAME_BYTES, check_name

# S3's smallest part but the last is 5 MiB; 8 MiB keeps request counts low without
# holding much in memory.
PART_SIZE = 8 << 20
_MIN_PART_SIZE = 5 << 20
# Parts uploading at once while the next is encrypted (each holds one part in memory).
_PARTS_IN_FLIGHT = 4
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING = {"NoSuchKey", "404", "NotFound"}
_NEEDS_BOTO3 = "blobs.backend = 's3' needs boto3: pip install 'sealml[s3]'"
_REFUSED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}


@dataclass(frozen=True)
class S3Location:
    """Where a workspace's blobs live in an S3-compatible service.

    *endpoint_url* is None for AWS itself; another service's must use https, except on a
    loopback address (a local MinIO, a test server). *ca_bundle* names a private CA's
    certificates for that endpoint.
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            raise ConfigError(f"blobs.bucket {self.bucket!r} is not a valid S3 bucket name")
        prefix = self.prefix
        if prefix.startswith("/") or any(p in ("", ".", "..") for p in prefix.split("/")[:-1]):
            raise ConfigError(
                "blobs.prefix must be relative, made of non-empty parts, and end with '/'"
            )
        if prefix and not prefix.endswith("/"):
            raise ConfigError("blobs.prefix must end with '/'")
        if self.endpoint_url is not None:
            if not transport_is_protected(self.endpoint_url):
                raise ConfigError(
                    "blobs.endpoint_url must be an https:// URL (plain http only to a "
                    "loopback address)"
                )
            parts = urlsplit(self.endpoint_url)
            if parts.username or parts.password:
                raise ConfigError(
                    "blobs.endpoint_url must not carry credentials; use the AWS credential "
                    "chain (environment or profile)"
                )

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        ca_bundle: str | None = None,
    ) -> S3Location:
        """``s3://bucket`` or ``s3://bucket/prefix/`` (a missing final '/' is added)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise UsageError(f"{url!r} is not an s3://bucket/prefix/ URL")
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(
            bucket=parts.netloc,
            prefix=prefix,
            endpoint_url=endpoint_url,
            region=region,
            ca_bundle=ca_bundle,
        )


@contextlib.contextmanager
def _translated(location: S3Location, blob: str | None = None) -> Iterator[None]:
    """botocore's errors as sealml's one-line errors (their texts hold no credentials)."""
    try:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )
    except ImportError:
        raise ConfigError(_NEEDS_BOTO3) from None

    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", "unknown"))
        if blob is not None and code in _MISSING:
            raise IntegrityError(f"blob {blob} is missing from the store") from None
        if code == "NoSuchBucket":
            raise ConfigError(f"blob store {location}: the bucket does not exist") from None
        if code in _REFUSED:
            raise AuthenticationError(
                f"blob store {location} refused the request ({code}): check the S3 "
                "credentials and the bucket's policy"
            ) from None
        raise UsageError(f"blob store {location}: {code}") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise ConfigError(
            f"blob store {location}: no S3 credentials (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        ) from None
    except BotoCoreError as error:
        raise UsageError(f"blob store {location} is unavailable: {type(error).__name__}") from None


def _client(location: S3Location) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError(_NEEDS_BOTO3) from None
    settings = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        # Path-style addressing works with every S3-compatible service; AWS keeps
        # virtual-hosted style.
        s3={"addressing_style": "path" if location.endpoint_url else "auto"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=location.endpoint_url,
        region_name=location.region,
        verify=location.ca_bundle or True,
        config=settings,
    )


class _ObjectReader(io.RawIOBase):
    """An object's body as a raw stream read into the caller's buffers."""

    def __init__(self, body: Any, location: S3Location, name: str) -> None:
        super().__init__()
        self._body = body
        self._location = location
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _translated(self._location, self._name):
            data = self._body.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


class _S3Writer:
    """A blob uploaded in parts as it is written, a few parts in flight while encryption
    goes on; nothing is visible before ``commit``."""

    def __init__(self, store: S3BlobStore) -> None:
        self._store = store
        self.name = secrets.token_hex(NAME_BYTES)
        self._key = store.key_of(self.name)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: deque[Future[dict[str, Any]]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._committed = False

    def write(self, data: memoryview, /) -> int:
        self._buffer += data
        size = self._store.part_size
        while len(self._buffer) >= size:
            with memoryview(self._buffer) as view:  # one copy of the part, not two
                part = bytes(view[:size])
            del self._buffer[:size]
            self._send_part(part)
        return len(data)

    def _send_part(self, chunk: bytes) -> None:
        if self._upload_id is None:
            with _translated(self._store.location):
                started = self._store.client.create_multipart_upload(
                    Bucket=self._store.location.bucket, Key=self._key
                )
            self._upload_id = str(started["UploadId"])
            self._pool = ThreadPoolExecutor(_PARTS_IN_FLIGHT, thread_name_prefix="sealml-s3")
        assert self._pool is not None
        if len(self._in_flight) >= _PARTS_IN_FLIGHT:
            self._parts.append(self._in_flight.popleft().result())
        number = len(self._parts) + len(self._in_flight) + 1
        self._in_flight.append(self._pool.submit(self._upload_part, number, chunk))

    def _upload_part(self, number: int, chunk: bytes) -> dict[str, Any]:
        with _translated(self._store.location):
            sent = self._store.client.upload_part(
                Bucket=self._store.location.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=chunk,
            )
        return {"ETag": sent["ETag"], "PartNumber": number}

    def commit(self) -> None:
        client, bucket = self._store.client, self._store.location.bucket
        if self._upload_id is None:
            with _translated(self._store.location):
                client.put_object(Bucket=bucket, Key=self._key, Body=bytes(self._buffer))
        else:
            if self._buffer:
                self._send_part(bytes(self._buffer))
            while self._in_flight:
                self._parts.append(self._in_flight.popleft().result())
            with _translated(self._store.location):
                client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        self._buffer = bytearray()
        self._committed = True

    def __enter__(self) -> _S3Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            for pending in self._in_flight:
                pending.cancel()
            self._pool.shutdown(wait=True)
        if not self._committed and self._upload_id is not None:
            # Best effort: an upload left behind is invisible and `discard_partial`
            # (or the bucket's lifecycle rule) removes it later.
            with contextlib.suppress(Exception):
                self._store.client.abort_multipart_upload(
                    Bucket=self._store.location.bucket, Key=self._key, UploadId=self._upload_id
                )
        self._buffer = bytearray()


class S3BlobStore:
    """Blobs as objects named ``prefix + blob name`` in one bucket.

    The client is made on first use, so opening a workspace costs no network round trip
    and no boto3 import until a blob is read or written.
    """

    def __init__(self, location: S3Location, *, part_size: int = PART_SIZE) -> None:
        if part_size < _MIN_PART_SIZE:
            raise UsageError(f"an S3 part holds at least {_MIN_PART_SIZE} bytes")
        self.location = location
        self.part_size = part_size
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3BlobStore({self.location})"

    def __str__(self) -> str:
        return str(self.location)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _client(self.location)
        return self._client

    @classmethod
    def initialise(cls, location: S3Location) -> S3BlobStore:
        """Check the bucket is reachable and the prefix holds nothing yet (a workspace
        never shares its objects with another)."""
        store = cls(location)
        with _translated(location):
            listed = store.client.list_objects_v2(
                Bucket=location.bucket, Prefix=location.prefix, MaxKeys=1
            )
        if listed.get("KeyCount", 0):
            raise UsageError(
                f"{location} already holds objects; a workspace needs a prefix of its own"
            )
        return store

    def versioned(self) -> bool:
        """Whether the bucket keeps older versions of objects (what lets a deleted or
        overwritten blob be recovered without a workspace backup)."""
        with _translated(self.location):
            answer = self.client.get_bucket_versioning(Bucket=self.location.bucket)
        return bool(answer.get("Status") == "Enabled")

    def key_of(self, name: str) -> str:
        check_name(name)
        return self.location.prefix + name

    def writer(self) -> _S3Writer:
        return _S3Writer(self)

    def open(self, name: str) -> io.RawIOBase:
        with _translated(self.location, name):
            answer = self.client.get_object(Bucket=self.location.bucket, Key=self.key_of(name))
        return _ObjectReader(answer["Body"], self.location, name)

    def size(self, name: str) -> int:
        with _translated(self.location, name):
            head = self.client.head_object(Bucket=self.location.bucket, Key=self.key_of(name))
        return int(head["ContentLength"])

    def delete(self, name: str) -> None:
        with _translated(self.location, name):
            self.client.delete_object(Bucket=self.location.bucket, Key=self.key_of(name))

    def purge(self, name: str) -> None:
        """Delete the object and, in a versioned bucket, every older version and delete
        marker of it (needs s3:DeleteObjectVersion; Object Lock retention still wins)."""
        key = self.key_of(name)
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.location.bucket, Prefix=key
        )
        with _translated(self.location):
            found = [
                {"Key": key, "VersionId": str(entry["VersionId"])}
                for page in pages
                for group in ("Versions", "DeleteMarkers")
                for entry in page.get(group, ())
                if entry["Key"] == key
            ]
            for start in range(0, len(found), 1000):  # DeleteObjects takes 1000 at most
                answer = self.client.delete_objects(
                    Bucket=self.location.bucket,
                    Delete={"Objects": found[start : start + 1000], "Quiet": True},
                )
                if answer.get("Errors"):
                    code = answer["Errors"][0].get("Code", "unknown")
                    raise UsageError(f"blob store {self.location}: {code} deleting {name}")

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
        except IntegrityError:
            return False
        return True

    def listing(self) -> Iterator[tuple[str, int]]:
        """Every blob under the prefix with its size, a thousand per request."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=self.location.prefix
        )
        with _translated(self.location):
            for page in pages:
                for entry in page.get("Contents", ()):
                    name = str(entry["Key"])[len(self.location.prefix) :]
                    if _is_blob_name(name):
                        yield name, int(entry["Size"])

    def _uploads(self, older_than_seconds: float) -> Iterator[dict[str, Any]]:
        cutoff = time.time() - older_than_seconds
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.location.bucket, Prefix=self.location.prefix
        )
        with _translated(self.location):
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"].timestamp() < cutoff:
                        yield upload

    def stale_partials(self, older_than_seconds: float) -> int:
        return sum(1 for _ in self._uploads(older_than_seconds))

    def discard_partial(self, older_than_seconds: float) -> int:
        """Abort multipart uploads under the prefix started longer ago than the given age."""
        uploads = list(self._uploads(older_than_seconds))
        with _translated(self.location):
            for upload in uploads:
                self.client.abort_multipart_upload(
                    Bucket=self.location.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        return len(uploads)


def _is_blob_name(name: str) -> bool:
    try:
        check_name(name)
    except UsageError:
        return False
    return True
