"""Score rows with a model that `sealml serve` exposes, and accept only signed answers.

The server answers over TLS, authenticates the API key, validates every row against the
schema learnt from the training data and, asked with ``X-Sealml-Sign: 1``, signs the exact
response body with its principal's key. This client pins that key (exported once from the
workspace, not fetched from the server it is meant to check) and refuses an answer whose
signature does not verify.

    sealml keys export --user svc -o server-key.pem    # the serving principal's key
    sealml apikey create scorer --model adult-income   # prints the API key once
    export SEALML_API_KEY=sml_...
    python examples/score_client.py https://127.0.0.1:8443 adult-income rows.jsonl \\
        --ca .sealml/serve-tls/ca.pem --server-key server-key.pem

``rows.jsonl`` holds one JSON object per line, one input per field.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

from sealml.crypto.signing import VerifyingKey
from sealml.serving.signatures import HEADER, REQUEST_HEADER, verify_body


class UnsignedAnswerError(Exception):
    """The server's answer was not signed by the pinned key."""


def score(
    url: str,
    model: str,
    api_key: str,
    instances: list[dict[str, Any]],
    *,
    ca: Path,
    server_key: VerifyingKey,
) -> dict[str, Any]:
    """The server's answer for *instances*, after its signature checked out."""
    tls = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=url, verify=tls, timeout=30) as client:
        response = client.post(
            f"/v1/models/{model}/predict",
            json={"instances": instances},
            headers={"x-api-key": api_key, REQUEST_HEADER: "1"},
        )
    if response.status_code != 200:
        raise httpx.HTTPStatusError(
            f"{response.status_code}: {response.text[:200]}",
            request=response.request,
            response=response,
        )
    if not verify_body(server_key, response.content, response.headers.get(HEADER, "")):
        raise UnsignedAnswerError("the answer is not signed by the pinned server key; refusing it")
    answer: dict[str, Any] = response.json()
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("rows", type=Path, help="JSON lines, one input object per line")
    parser.add_argument("--ca", type=Path, required=True, help="CA that signed the server")
    parser.add_argument("--server-key", type=Path, required=True, help="pinned PEM key")
    args = parser.parse_args()
    api_key = os.environ.get("SEALML_API_KEY")
    if not api_key:
        sys.exit("set SEALML_API_KEY to the key `sealml apikey create` printed")
    lines = args.rows.read_text(encoding="utf-8").splitlines()
    instances = [json.loads(line) for line in lines if line.strip()]
    server_key = VerifyingKey.from_pem(args.server_key.read_bytes())
    try:
        answer = score(args.url, args.model, api_key, instances, ca=args.ca, server_key=server_key)
    except (httpx.HTTPError, UnsignedAnswerError) as error:
        sys.exit(f"error: {error}")
    print(json.dumps(answer, indent=2))


if __name__ == "__main__":
    main()
