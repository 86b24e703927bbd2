"""Transparency-log checkpoints in the C2SP signed-note format, signed with Ed25519.

A checkpoint note is::

    <origin>\\n
    <tree size, decimal>\\n
    <base64 root hash>\\n
    [<extension line>\\n ...]
    \\n
    — <key name> <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>\\n

The signature covers the text above the blank line, extension lines included (a
workspace writes one: the digest of its attested state, see :mod:`sealml.access.anchor`).
The key hash is the first four bytes of SHA-256(key name || 0x0A || 0x01 || public key);
the verifier key is written ``<name>+<hex key hash>+<base64(0x01 || public key)>``, as the
Go ``sumdb/note`` package does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from ..crypto.signing import KeyFormatError, Signer, VerifyingKey
from ..errors import IntegrityError, UsageError

_ED25519 = b"\x01"
_DASH = "\u2014 "
_MAX_NOTE = 64 * 1024


def _key_hash(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_raw).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise ValueError("a note key name must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class NoteVerifier:
    """A named Ed25519 public key that checks checkpoint signatures."""

    name: str
    key: VerifyingKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.name, self.key.raw())

    def encode(self) -> str:
        """The verifier key string, for users to keep outside the workspace."""
        raw = base64.b64encode(_ED25519 + self.key.raw()).decode()
        return f"{self.name}+{self.key_hash.hex()}+{raw}"

    @classmethod
    def decode(cls, text: str) -> NoteVerifier:
        try:
            name, key_hash, raw_b64 = text.strip().split("+", 2)
            raw = base64.b64decode(raw_b64, validate=True)
            if raw[:1] != _ED25519 or len(raw) != 33:
                raise ValueError
            verifier = cls(name, VerifyingKey.from_raw_ed25519(raw[1:]))
            if verifier.key_hash.hex() != key_hash:
                raise ValueError
        except (ValueError, binascii.Error, KeyFormatError):
            raise UsageError("malformed checkpoint verifier key") from None
        return verifier


@dataclass(frozen=True)
class NoteSigner:
    """The workspace's checkpoint signing key and its note key name."""

    name: str
    key: Signer

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.key.public_key)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name}, ***)"


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and its root hash, and the signed note's
    extension lines (non-empty, after the root hash)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not line or "\n" in line for line in self.extensions):
            raise ValueError("a checkpoint extension line must be one non-empty line")

    def body(self) -> str:
        lines = (self.origin, str(self.size), base64.b64encode(self.root).decode())
        return "".join(f"{line}\n" for line in (*lines, *self.extensions))

    def sign(self, signer: NoteSigner, *cosigners: NoteSigner) -> str:
        """The signed note text of this checkpoint: one signature line per signer, in
        order (a workspace key rotation's handover: the old key first, the new one last)."""
        text = self.body()
        lines = []
        for each in (signer, *cosigners):
            signature = each.key.sign(text.encode())
            blob = base64.b64encode(each.verifier.key_hash + signature).decode()
            lines.append(f"{_DASH}{each.name} {blob}\n")
        return f"{text}\n{''.join(lines)}"


@dataclass(frozen=True)
class _Note:
    text: str
    checkpoint: Checkpoint
    signatures: tuple[tuple[str, bytes], ...]  # (key name, key hash + signature)


def _parse(note: str) -> _Note:
    """The parts of a checkpoint note, nothing verified (UsageError if it is none)."""
    if len(note) > _MAX_NOTE or not note.endswith("\n") or "\n\n" not in note:
        raise UsageError("not a signed checkpoint note")
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise UsageError("checkpoint note lacks origin, size or root hash")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    try:
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise ValueError
        size = int(size_text)
        root = base64.b64decode(root_text, validate=True)
        if len(root) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise UsageError("checkpoint note has a malformed size or root hash") from None
    extensions = tuple(lines[3:])
    if any(not line for line in extensions):
        raise UsageError("checkpoint note has an empty extension line")
    found: list[tuple[str, bytes]] = []
    for line in signatures.split("\n")[:-1]:
        if not line.startswith(_DASH):
            raise UsageError("checkpoint note has a malformed signature line")
        name, _, blob_text = line[len(_DASH) :].partition(" ")
        try:
            found.append((name, base64.b64decode(blob_text, validate=True)))
        except (ValueError, binascii.Error):
            continue
    return _Note(text, Checkpoint(origin, size, root, extensions), tuple(found))


def open_note(note: str, verifier: NoteVerifier) -> Checkpoint:
    """Parse a signed checkpoint note and check its signature by *verifier*.

    Raises IntegrityError for a bad or missing signature, UsageError for text that is not a
    checkpoint note at all.
    """
    parsed = _parse(note)
    for name, blob in parsed.signatures:
        if (
            name == verifier.name
            and blob[:4] == verifier.key_hash
            and verifier.key.verify(blob[4:], parsed.text.encode())
        ):
            return parsed.checkpoint
    raise IntegrityError(f"checkpoint note is not signed by {verifier.name}")


def unverified_checkpoint(note: str) -> Checkpoint:
    """The tree head a note states, its signatures unchecked: only to choose the key that
    must have signed it (then :func:`open_note`)."""
    return _parse(note).checkpoint


def last_signed_by(note: str, verifier: NoteVerifier) -> bool:
    """Whether the note's last signature line names *verifier*'s key (not checked: the
    note was read from the workspace's own database to decide whether this process may
    sign the next checkpoint, see :meth:`Ledger.append`)."""
    signatures = _parse(note).signatures
    return bool(signatures) and signatures[-1][1][:4] == verifier.key_hash
