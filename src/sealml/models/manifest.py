"""Which files make up a model, and their digests: the manifest a model signature covers.

The rules are those of OpenSSF model signing's ``files`` serialization, so a manifest made
here equals one made by the reference tool: every regular file under the model folder
(dotfiles and empty files included), SHA-256 of each, named by its POSIX path relative to
the folder (``.`` when the model is a single file), ordered by path components; the
signature file, root-level git files and explicit ignore paths are left out; any symlink is
refused. The root digest is SHA-256 over the raw digests in that order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import UsageError

GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file of the model and its SHA-256 (lowercase hex)."""

    name: str
    digest: str


@dataclass(frozen=True)
class Manifest:
    """The files of a model in reference order, and what was left out."""

    resources: tuple[Resource, ...]
    ignore_paths: tuple[str, ...]

    @property
    def root_digest(self) -> str:
        return root_digest(self.resources)

    def as_map(self) -> dict[str, str]:
        return {resource.name: resource.digest for resource in self.resources}


def root_digest(resources: Iterable[Resource]) -> str:
    """SHA-256 over the concatenated raw digests, in the order given."""
    hasher = hashlib.sha256()
    for resource in resources:
        hasher.update(bytes.fromhex(resource.digest))
    return hasher.hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def hash_model(
    model: Path, *, ignore: Iterable[str] = (), signature: Path | None = None
) -> Manifest:
    """The manifest of the file or folder *model*.

    *ignore* holds paths relative to the model folder; *signature* is left out when it lies
    inside the folder. Symlinks anywhere are refused (a link can point outside the model).
    """
    model = Path(model)
    if model.is_symlink():
        raise UsageError(f"{model} is a symlink; sign the real file or folder")
    if model.is_file():
        return Manifest((Resource(".", file_sha256(model)),), ())
    if not model.is_dir():
        raise UsageError(f"{model} is neither a file nor a folder")
    ignored = {_relative(model, entry) for entry in ignore}
    ignored.discard(None)
    if signature is not None:
        inside = _relative(model, str(signature.resolve()))
        if inside is not None:
            ignored.add(inside)
    ignored.update(GIT_PATHS)
    ignore_parts = [PurePosixPath(entry).parts for entry in ignored if entry]
    resources = []
    for path in sorted(model.rglob("*"), key=lambda p: p.relative_to(model).parts):
        if path.is_symlink():
            raise UsageError(f"{path} is a symlink; models with symlinks are not signed")
        parts = path.relative_to(model).parts
        if any(parts[: len(prefix)] == prefix for prefix in ignore_parts):
            continue
        if path.is_file():
            resources.append(Resource("/".join(parts), file_sha256(path)))
    return Manifest(tuple(resources), tuple(sorted(e for e in ignored if e)))


def _relative(model: Path, entry: str) -> str | None:
    """*entry* (relative to the model, or absolute) as a POSIX path inside it, or None."""
    candidate = Path(entry)
    if candidate.is_absolute():
        try:
            candidate = candidate.relative_to(model.resolve())
        except ValueError:
            return None
    text = PurePosixPath(*candidate.parts).as_posix()
    if text.startswith("..") or text in ("", "."):
        return None
    return text
