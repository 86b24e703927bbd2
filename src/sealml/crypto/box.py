"""AES-256-GCM for small secrets (wrapped keys, private keys): ``nonce || ciphertext || tag``."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_SIZE = 12
OVERHEAD = NONCE_SIZE + 16


class BoxOpenError(Exception):
    """The box did not authenticate: wrong key, wrong context or altered bytes."""


def seal_box(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt *plaintext* under *key*, bound to *context* (authenticated, not encrypted)."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_box(key: bytes, box: bytes, context: bytes) -> bytes:
    """Decrypt a box made by :func:`seal_box`; raises BoxOpenError unless it authenticates."""
    if len(box) < OVERHEAD:
        raise BoxOpenError("box too short")
    try:
        return AESGCM(key).decrypt(box[:NONCE_SIZE], box[NONCE_SIZE:], context)
    except InvalidTag:
        raise BoxOpenError("box failed authentication") from None
