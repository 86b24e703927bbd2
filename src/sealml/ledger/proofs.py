"""Offline proof files: inclusion of one event, consistency between two tree heads.

Both are JSON documents that carry the signed checkpoint note they refer to, so anyone with
the workspace's verifier key can check them without the workspace.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..crypto.canonical import parse_json
from ..errors import IntegrityError, UsageError
from .checkpoint import Checkpoint, NoteVerifier, open_note
from .log import InclusionProof
from .merkle import leaf_hash, verify_consistency, verify_inclusion

INCLUSION_FORMAT = "sealml-inclusion-proof/1"
CONSISTENCY_FORMAT = "sealml-consistency-proof/1"
_MAX_PROOF_HASHES = 64


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _hashes(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > _MAX_PROOF_HASHES:
        raise UsageError("proof hashes are malformed")
    try:
        hashes = [base64.b64decode(h, validate=True) for h in value]
    except (TypeError, ValueError, binascii.Error):
        raise UsageError("proof hashes are malformed") from None
    if any(len(h) != 32 for h in hashes):
        raise UsageError("proof hashes are malformed")
    return hashes


def _load(text: str, expected_format: str) -> dict[str, Any]:
    try:
        data = parse_json(text)
    except ValueError:
        raise UsageError("proof file is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise UsageError(f"proof file is not a {expected_format} document")
    return data


def encode_inclusion(proof: InclusionProof) -> str:
    return json.dumps(
        {
            "format": INCLUSION_FORMAT,
            "event": proof.event.decode("utf-8"),
            "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size,
            "hashes": [_b64(h) for h in proof.hashes],
            "checkpoint": proof.checkpoint_note,
        },
        indent=2,
    )


def check_inclusion(text: str, verifier: NoteVerifier) -> tuple[dict[str, Any], Checkpoint]:
    """Verify an inclusion proof file; returns the proven event's fields and the checkpoint."""
    data = _load(text, INCLUSION_FORMAT)
    try:
        event = str(data["event"]).encode("utf-8")
        index = int(data["leaf_index"])
        size = int(data["tree_size"])
        note = str(data["checkpoint"])
    except (KeyError, TypeError, ValueError):
        raise UsageError("inclusion proof is missing fields") from None
    checkpoint = open_note(note, verifier)
    if checkpoint.size != size:
        raise IntegrityError("inclusion proof tree size differs from its checkpoint")
    if not verify_inclusion(
        index, size, leaf_hash(event), _hashes(data["hashes"]), checkpoint.root
    ):
        raise IntegrityError(f"event {index} is not included in the signed tree of size {size}")
    try:
        fields = parse_json(event)
    except ValueError:
        raise UsageError("the proven event is not valid JSON") from None
    if not isinstance(fields, dict) or fields.get("seq") != index:
        raise IntegrityError("the proven event's sequence number differs from its leaf index")
    return fields, checkpoint


def encode_consistency(old_note: str, new_note: str, hashes: list[bytes]) -> str:
    return json.dumps(
        {
            "format": CONSISTENCY_FORMAT,
            "old": old_note,
            "new": new_note,
            "hashes": [_b64(h) for h in hashes],
        },
        indent=2,
    )


def check_consistency(
    text: str, verifier: NoteVerifier, old_verifier: NoteVerifier | None = None
) -> tuple[Checkpoint, Checkpoint]:
    """Verify a consistency proof file between two signed checkpoints; the old one may be
    signed by *old_verifier* (a key the workspace rotated away from since)."""
    data = _load(text, CONSISTENCY_FORMAT)
    try:
        old = open_note(str(data["old"]), old_verifier or verifier)
        new = open_note(str(data["new"]), verifier)
    except KeyError:
        raise UsageError("consistency proof is missing fields") from None
    if old.origin != new.origin:
        raise IntegrityError("the two checkpoints are from different logs")
    if not verify_consistency(old.size, new.size, old.root, new.root, _hashes(data["hashes"])):
        raise IntegrityError(
            f"the tree of size {new.size} does not extend the tree of size {old.size} "
            "(rolled back or forked log)"
        )
    return old, new
