"""Sealing into and reading back from an S3-compatible bucket, next to plain boto3.

A workspace whose blobs live in a bucket puts and gets artifacts of a few sizes; the
anchor, in the same run against the same server, is boto3 uploading and downloading the
same bytes unencrypted (``put_object`` / ``upload_fileobj``, ``get_object``). The server
is moto's S3 server on loopback (no S3 service is reachable here), so absolute figures
are the server's; the difference is what sealing adds on top of the transfer. Prints one
JSON object.

Usage: python bench/s3.py [--sizes 1,16,64]   (sizes in MiB; pip install 'sealml[test]')
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1 << 20


def _best(repeat: int, action: Any) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def _one_size(
    ws: Any, client: Any, transfer: Any, folder: Path, size_mib: int, repeat: int
) -> dict[str, Any]:
    data = os.urandom(size_mib * MIB)
    source = folder / f"data-{size_mib}.bin"
    source.write_bytes(data)
    back = folder / "back.bin"
    plain_put = _best(
        repeat,
        lambda: client.upload_fileobj(io.BytesIO(data), "bench-plain", "object", Config=transfer),
    )
    plain_get = _best(
        repeat, lambda: client.get_object(Bucket="bench-plain", Key="object")["Body"].read()
    )
    infos: list[Any] = []
    sealed_put = _best(repeat, lambda: infos.append(ws.put(source, kind="dataset")))

    def get() -> None:
        back.unlink(missing_ok=True)
        ws.get(infos[-1].id, back)

    sealed_get = _best(repeat, get)
    assert back.read_bytes() == data
    return {
        "size_mib": size_mib,
        "put_seconds": {"plain_boto3": round(plain_put, 3), "sealml": round(sealed_put, 3)},
        "get_seconds": {"plain_boto3": round(plain_get, 3), "sealml": round(sealed_get, 3)},
        "put_mib_per_s": {
            "plain_boto3": round(size_mib / plain_put, 1),
            "sealml": round(size_mib / sealed_put, 1),
        },
        "get_mib_per_s": {
            "plain_boto3": round(size_mib / plain_get, 1),
            "sealml": round(size_mib / sealed_get, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,16,64")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )  # fmt: skip
    import boto3
    from boto3.s3.transfer import TransferConfig
    from moto.server import ThreadedMotoServer

    from sealml import Secret, Workspace
    from sealml.crypto.kdf import FAST_PARAMS
    from sealml.store.s3 import PART_SIZE, S3Location

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="bench-plain")
    client.create_bucket(Bucket="bench-sealed")
    # The anchor uploads in parts of the same size as sealml does.
    transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sealml-bench-s3-") as folder:
        ws = Workspace.init(
            Path(folder) / "ws",
            passphrase=Secret("bench passphrase"),
            admin_password=Secret("bench-password-1"),
            kdf=FAST_PARAMS,
            bucket=S3Location("bench-sealed", endpoint_url=endpoint),
        )
        for size_mib in (int(s) for s in args.sizes.split(",")):
            rows.append(_one_size(ws, client, transfer, Path(folder), size_mib, args.repeat))
        ws.close()
    server.stop()
    print(
        json.dumps(
            {
                "server": "moto S3 server on loopback",
                "anchor": "boto3 put/get of the same bytes, unencrypted, same server",
                "part_size_mib": PART_SIZE // MIB,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
