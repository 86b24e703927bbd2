"""The default key provider: a passphrase-protected keystore file.

The passphrase goes through Argon2id to a master key; the master key seals each KEK version
and each named workspace secret (the checkpoint signing key, for instance) with AES-256-GCM,
bound to its name. The file is JSON, mode 0600, replaced atomically under a file lock.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..clock import utc_now
from ..crypto.box import BoxOpenError, open_box, seal_box
from ..crypto.canonical import parse_json
from ..crypto.kdf import DEFAULT_PARAMS, Argon2idParams, derive_key, new_salt
from ..crypto.secret import Secret
from ..errors import AuthenticationError, ConfigError, IntegrityError, NotFoundError, UsageError
from ..fsutil import create_private, replacement_stamp, write_private
from .provider import DEK_SIZE, WrappedKey

FORMAT = "sealml-keystore/1"
KEK_PREFIX = "local:"


@contextlib.contextmanager
def _writers_held(path: Path) -> Iterator[None]:
    """Hold the keystore's file lock: no other process changes it inside the block."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def keystore_held(path: Path) -> Iterator[bytes]:
    """The keystore file's bytes, with its writers held off until the block ends: a copy
    of the database made inside the block refers only to keys this copy holds (a rotation
    adds its key and destroys the old ones under the same lock)."""
    with _writers_held(path):
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"no keystore at {path}") from None
        yield content


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise ConfigError("keystore is malformed (bad base64)") from None


def _kek_context(workspace_id: str, kek_id: str) -> bytes:
    return f"sealml/keystore/v1/kek:{workspace_id}:{kek_id}".encode()


def _check_context(workspace_id: str) -> bytes:
    return f"sealml/keystore/v1/check:{workspace_id}".encode()


def _secret_context(workspace_id: str, name: str) -> bytes:
    return f"sealml/keystore/v1/secret:{workspace_id}:{name}".encode()


def _wrap_context(kek_id: str, context: bytes) -> bytes:
    return kek_id.encode("ascii") + b"\x00" + context


class LocalKeystore:
    """A :class:`~sealml.keys.provider.KeyProvider` backed by a passphrase-protected file."""

    name = "local"

    def __init__(self, path: Path, data: dict[str, Any], master: bytes) -> None:
        self._path = path
        self._data = data
        self._master = master
        self._workspace_id = str(data["workspace"])
        try:
            open_box(master, _unb64(data["check"]), _check_context(self._workspace_id))
        except BoxOpenError:
            raise AuthenticationError("wrong keystore passphrase") from None
        self._keks: dict[str, bytes] = {}
        for entry in data["keks"]:
            kek_id = str(entry["id"])
            try:
                self._keks[kek_id] = open_box(
                    master, _unb64(entry["box"]), _kek_context(self._workspace_id, kek_id)
                )
            except BoxOpenError:
                raise IntegrityError(f"keystore entry {kek_id} failed authentication") from None
        self._seen: tuple[int, int, int] | None = None  # the file's stamp at the last refresh

    def __repr__(self) -> str:
        return f"LocalKeystore({self._path}, keks={list(self._keks)})"

    # -- creation and opening -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        workspace_id: str,
        passphrase: Secret,
        params: Argon2idParams = DEFAULT_PARAMS,
    ) -> LocalKeystore:
        """Create a new keystore at *path* with a first KEK; refuses to overwrite."""
        if not passphrase:
            raise UsageError("the keystore passphrase must not be empty")
        salt = new_salt()
        master = derive_key(passphrase, salt, params)
        kek_id = f"{KEK_PREFIX}1"
        data: dict[str, Any] = {
            "format": FORMAT,
            "workspace": workspace_id,
            "kdf": {"algorithm": "argon2id", "salt": _b64(salt), **params.to_dict()},
            "check": _b64(seal_box(master, b"", _check_context(workspace_id))),
            "current": kek_id,
            "keks": [
                {
                    "id": kek_id,
                    "created": utc_now(),
                    "box": _b64(
                        seal_box(master, os.urandom(32), _kek_context(workspace_id, kek_id))
                    ),
                }
            ],
            "secrets": {},
        }
        try:
            create_private(path, json.dumps(data, indent=2).encode())
        except FileExistsError:
            raise UsageError(f"a keystore already exists at {path}") from None
        return cls(path, data, master)

    @classmethod
    def open(cls, path: Path, passphrase: Secret) -> LocalKeystore:
        """Open and unlock the keystore; wrong passphrases raise AuthenticationError."""
        data = cls._load(path)
        return cls(path, data, cls._derive(passphrase, data, path))

    @staticmethod
    def _derive(passphrase: Secret, data: dict[str, Any], path: Path) -> bytes:
        """The master key *passphrase* gives with the file's KDF parameters and salt."""
        try:
            params = Argon2idParams.from_dict(data["kdf"])
            salt = _unb64(data["kdf"]["salt"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"keystore {path} is malformed: {error}") from None
        return derive_key(passphrase, salt, params)

    @classmethod
    def open_with_key(cls, path: Path, master: bytes) -> LocalKeystore:
        """Unlock with the passphrase-derived key a login session kept (no KDF); a key
        from before a passphrase change raises AuthenticationError."""
        return cls(path, cls._load(path), master)

    @property
    def session_key(self) -> bytes:
        """The passphrase-derived key, for sealing into a login session ticket only."""
        return self._master

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no keystore at {path}") from None
        try:
            data = parse_json(raw)
        except ValueError:
            raise ConfigError(f"keystore {path} is not valid JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"keystore {path} has an unknown format")
        if not isinstance(data.get("keks"), list) or not data["keks"]:
            raise ConfigError(f"keystore {path} holds no key-encryption key")
        if not isinstance(data.get("secrets"), dict) or "check" not in data:
            raise ConfigError(f"keystore {path} is malformed (secrets)")
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers across processes and reload what another writer saved."""
        with _writers_held(self._path):
            self._adopt(self._load(self._path))
            yield
            write_private(self._path, json.dumps(self._data, indent=2).encode())

    # -- KeyProvider ----------------------------------------------------------------------

    def current_kek_id(self) -> str:
        return str(self._data["current"])

    def kek_ids(self) -> list[str]:
        return list(self._keks)

    def wrap(self, dek: bytes, context: bytes) -> WrappedKey:
        if len(dek) != DEK_SIZE:
            raise ValueError("data keys are 32 bytes")
        kek_id = self.current_kek_id()
        return WrappedKey(kek_id, seal_box(self._keks[kek_id], dek, _wrap_context(kek_id, context)))

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        if wrapped.kek_id not in self._keks:
            self.refresh()  # re-wrapped by a rotation in another process, perhaps
        kek = self._keks.get(wrapped.kek_id)
        if kek is None and not wrapped.kek_id.startswith(KEK_PREFIX):
            raise IntegrityError(
                f"key-encryption key {wrapped.kek_id} is not in the keystore: the workspace's "
                "keys moved to a token (`keys migrate`); open the workspace again"
            )
        if kek is None:
            raise IntegrityError(f"key-encryption key {wrapped.kek_id} is no longer held")
        try:
            dek = open_box(kek, wrapped.blob, _wrap_context(wrapped.kek_id, context))
        except BoxOpenError:
            raise IntegrityError("a wrapped data key failed authentication") from None
        if len(dek) != DEK_SIZE:
            raise IntegrityError("a wrapped data key has the wrong size")
        return dek

    def refresh(self) -> None:
        """Reload the KEKs when another process changed the file (a stat when none did).

        KEK ids are plain in the file, so a passphrase changed elsewhere matters only when
        a new KEK must be unsealed: then this process stops (AuthenticationError) rather
        than wrap data keys under a KEK that was destroyed."""
        stamp = self._stamp()
        if stamp == self._seen:
            return
        fresh = self._load(self._path)
        held = {str(entry["id"]) for entry in fresh["keks"]}
        if fresh["current"] != self._data["current"] or not held <= set(self._keks):
            self._adopt(fresh)
        self._seen = stamp

    def reload(self) -> None:
        """Read everything again, named secrets too (another process changed them)."""
        self._adopt(self._load(self._path))

    def _adopt(self, fresh: dict[str, Any]) -> None:
        try:
            reopened = LocalKeystore(self._path, fresh, self._master)
        except AuthenticationError:
            raise AuthenticationError(
                "the keystore was sealed under a new passphrase since this process opened "
                "it; restart it with the new passphrase"
            ) from None
        self._data, self._keks = reopened._data, reopened._keks

    def _stamp(self) -> tuple[int, int, int]:
        try:
            return replacement_stamp(self._path)
        except FileNotFoundError:
            raise NotFoundError(f"no keystore at {self._path}") from None

    def rotate(self) -> str:
        with self._locked():
            numbers = [int(k.removeprefix(KEK_PREFIX)) for k in self._keks]
            kek_id = f"{KEK_PREFIX}{max(numbers) + 1}"
            kek = os.urandom(32)
            self._data["keks"].append(
                {
                    "id": kek_id,
                    "created": utc_now(),
                    "box": _b64(
                        seal_box(self._master, kek, _kek_context(self._workspace_id, kek_id))
                    ),
                }
            )
            self._data["current"] = kek_id
            self._keks[kek_id] = kek
        return kek_id

    def destroy(self, kek_ids: list[str]) -> None:
        doomed = set(kek_ids)
        if self.current_kek_id() in doomed:
            raise UsageError("the current key-encryption key cannot be destroyed")
        with self._locked():
            self._data["keks"] = [e for e in self._data["keks"] if e["id"] not in doomed]
            for kek_id in doomed:
                self._keks.pop(kek_id, None)

    def change_passphrase(self, current: Secret, new: Secret, params: Argon2idParams) -> None:
        """After checking *current*, seal every KEK and named secret under a key derived
        from *new* (fresh salt, *params*).

        The KEKs themselves do not change: a copy of the old file (a backup) still opens
        with the old passphrase, so after a leak rotate the KEKs too.
        """
        if not new:
            raise UsageError("the keystore passphrase must not be empty")
        salt = new_salt()
        master = derive_key(new, salt, params)
        with self._locked():
            workspace = self._workspace_id
            data = self._data
            if not hmac.compare_digest(self._derive(current, data, self._path), self._master):
                raise AuthenticationError("wrong keystore passphrase")
            for entry in data["keks"]:
                kek_id = str(entry["id"])
                context = _kek_context(workspace, kek_id)
                entry["box"] = _b64(seal_box(master, self._keks[kek_id], context))
            for name, entry in data["secrets"].items():
                value = self._open_secret(entry, name)
                entry["box"] = _b64(seal_box(master, value, _secret_context(workspace, name)))
            data["kdf"] = {"algorithm": "argon2id", "salt": _b64(salt), **params.to_dict()}
            data["check"] = _b64(seal_box(master, b"", _check_context(workspace)))
        self._master = master

    # -- named secrets --------------------------------------------------------------------

    def store_secret(self, name: str, value: bytes) -> None:
        """Seal a named workspace secret (e.g. the checkpoint signing key) in the keystore."""
        with self._locked():
            self._data["secrets"][name] = {
                "created": utc_now(),
                "box": _b64(
                    seal_box(self._master, value, _secret_context(self._workspace_id, name))
                ),
            }

    def delete_secret(self, name: str) -> None:
        """Forget a named secret (nothing happens when there is none)."""
        with self._locked():
            self._data["secrets"].pop(name, None)

    def secret_names(self) -> list[str]:
        """The names of the secrets the keystore holds."""
        return sorted(self._data["secrets"])

    def load_secret(self, name: str) -> bytes:
        """Open a named workspace secret."""
        entry = self._data["secrets"].get(name)
        if entry is None:
            raise NotFoundError(f"the keystore holds no secret named {name!r}")
        return self._open_secret(entry, name)

    def _open_secret(self, entry: dict[str, Any], name: str) -> bytes:
        try:
            return open_box(
                self._master, _unb64(entry["box"]), _secret_context(self._workspace_id, name)
            )
        except (BoxOpenError, KeyError, TypeError):
            raise IntegrityError(f"keystore secret {name!r} failed authentication") from None
