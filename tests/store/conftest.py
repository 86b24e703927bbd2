"""An S3-compatible server on loopback for the S3 blob store's tests.

moto's server speaks the S3 HTTP API, so boto3 talks to it exactly as it would to AWS or
MinIO: signed requests, multipart uploads, listings, errors. It stands in for the external
cloud service only; nothing in sealml knows it is not the real one.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

REGION = "us-east-1"
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_DEFAULT_REGION": REGION,
    # No AWS files of the developer's, and no instance-metadata lookups off the machine.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Set while collecting, before any test starts a process: the pipeline runner's sealing
# process, started by whichever test needs it first, keeps the environment it started with.
os.environ.update(_CREDENTIALS)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    if importlib.util.find_spec("boto3") is None or importlib.util.find_spec("moto") is None:
        pytest.skip("boto3 and moto[server] are not installed (pip install 'sealml[test]')")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The endpoint, with the test credentials restored should an earlier test have
    changed them."""
    for name, value in _CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


@pytest.fixture
def bucket(s3_env: str) -> str:
    """A new, empty bucket."""
    import boto3

    name = f"sealml-test-{secrets.token_hex(6)}"
    boto3.client("s3", endpoint_url=s3_env, region_name=REGION).create_bucket(Bucket=name)
    return name


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
