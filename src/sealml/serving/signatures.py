"""Signed responses (OWASP ML09): a detached signature over the exact response body, so a
downstream consumer can check the prediction came from this server unchanged.

Header: ``X-Sealml-Signature: keyid=<fingerprint>; sig=<base64url>``. The signed bytes are
``sealml/response/v1`` and a newline, then the body. The server's public key is published
at ``/v1/signing-key`` (PEM).
"""

from __future__ import annotations

import base64
import binascii

from ..crypto.signing import Signer, VerifyingKey

HEADER = "x-sealml-signature"
REQUEST_HEADER = "x-sealml-sign"
_DOMAIN = b"sealml/response/v1\n"


def sign_body(key: Signer, body: bytes) -> str:
    """The signature header value for *body*."""
    signature = base64.urlsafe_b64encode(key.sign(_DOMAIN + body)).rstrip(b"=").decode()
    return f"keyid={key.public_key.fingerprint()}; sig={signature}"


def verify_body(public_key: VerifyingKey, body: bytes, header: str) -> bool:
    """True when *header* is this key's valid signature over *body*."""
    fields = dict(part.strip().split("=", 1) for part in header.split(";") if "=" in part.strip())
    if fields.get("keyid") != public_key.fingerprint() or "sig" not in fields:
        return False
    text = fields["sig"]
    try:
        signature = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return False
    return public_key.verify(signature, _DOMAIN + body)
