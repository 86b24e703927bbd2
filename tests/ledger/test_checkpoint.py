"""The signed-note checkpoint format."""

from __future__ import annotations

import base64
import hashlib

import pytest

from sealml.crypto.signing import SigningKey
from sealml.errors import IntegrityError, UsageError
from sealml.ledger.checkpoint import Checkpoint, NoteSigner, NoteVerifier, open_note

ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner("sealml/test", SigningKey.generate("ed25519"))


def test_note_layout_and_round_trip(signer: NoteSigner) -> None:
    note = Checkpoint("sealml/test", 42, ROOT).sign(signer)
    lines = note.split("\n")
    assert lines[:4] == ["sealml/test", "42", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith("\u2014 sealml/test ")
    signature = base64.b64decode(lines[4].split(" ")[2])
    assert signature[:4] == signer.verifier.key_hash and len(signature) == 68
    assert open_note(note, signer.verifier) == Checkpoint("sealml/test", 42, ROOT)


def test_extension_lines_are_signed_and_read_back(signer: NoteSigner) -> None:
    checkpoint = Checkpoint("sealml/test", 7, ROOT, ("sealml-principals AAAA", "other x"))
    note = checkpoint.sign(signer)
    assert note.split("\n")[3:6] == ["sealml-principals AAAA", "other x", ""]
    assert open_note(note, signer.verifier) == checkpoint
    with pytest.raises(IntegrityError):  # an extension line is covered by the signature
        open_note(note.replace("other x", "other y"), signer.verifier)
    with pytest.raises(IntegrityError):  # and cannot be dropped
        open_note(note.replace("other x\n", ""), signer.verifier)
    with pytest.raises(ValueError):
        Checkpoint("sealml/test", 7, ROOT, ("",))
    with pytest.raises(ValueError):
        Checkpoint("sealml/test", 7, ROOT, ("two\nlines",))


def test_key_hash_follows_the_signed_note_rule(signer: NoteSigner) -> None:
    raw = signer.key.public_key.raw()
    expected = hashlib.sha256(b"sealml/test\n\x01" + raw).digest()[:4]
    assert signer.verifier.key_hash == expected
    encoded = signer.verifier.encode()
    assert encoded.startswith(f"sealml/test+{expected.hex()}+")
    assert NoteVerifier.decode(encoded) == signer.verifier


@pytest.mark.parametrize(
    "edit",
    [
        lambda n: n.replace("\n42\n", "\n43\n"),
        lambda n: n.replace("sealml/test\n", "sealml/other\n", 1),
        lambda n: n[:-10] + ("A" if n[-10] != "A" else "B") + n[-9:],
    ],
    ids=["size", "origin", "signature"],
)
def test_edited_note_fails(signer: NoteSigner, edit: object) -> None:
    note = Checkpoint("sealml/test", 42, ROOT).sign(signer)
    with pytest.raises(IntegrityError):
        open_note(edit(note), signer.verifier)  # type: ignore[operator]


def test_other_key_fails(signer: NoteSigner) -> None:
    note = Checkpoint("sealml/test", 1, ROOT).sign(signer)
    other = NoteSigner("sealml/test", SigningKey.generate("ed25519"))
    with pytest.raises(IntegrityError):
        open_note(note, other.verifier)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "a\n01\nAAAA\n\n",
        "a\n1\nnot base64!\n\n\u2014 a x\n",
        "a\n1\n" + "A" * 44 + "\n\nbad\n",
    ],
)
def test_malformed_notes_are_usage_errors(signer: NoteSigner, text: str) -> None:
    with pytest.raises(UsageError):
        open_note(text, signer.verifier)


@pytest.mark.parametrize("text", ["", "x+y", "a+00000000+AAAA", "a b+1234abcd+" + "A" * 44])
def test_malformed_verifier_keys(text: str) -> None:
    with pytest.raises(UsageError):
        NoteVerifier.decode(text)
