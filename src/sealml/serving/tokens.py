"""JWT bearer tokens from an external issuer (PyJWT).

Only the algorithms the config lists are accepted, and each algorithm only with a key of
its own type: ``alg: none`` is never accepted, and an HS256 token can never be checked
against an RSA public key (algorithm confusion), because the key is chosen by the
configured algorithm, never by the token.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from ..config import JwtSection

_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
_MIN_HS256_SECRET = 32
_FETCH_TIMEOUT = 10.0


class TokenRejectedError(Exception):
    """A bearer token is not valid; *reason* is for logs, never for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenClaims:
    """Who a valid token speaks for and what it allows."""

    subject: str
    scopes: tuple[str, ...]
    models: tuple[str, ...]

    @property
    def principal(self) -> str:
        return f"jwt:{self.subject}"

    def allows_model(self, name: str) -> bool:
        return "*" in self.models or name in self.models


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("scope", claims.get("scp", ""))
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


class TokenVerifier:
    """Checks bearer tokens against the configured issuer, audience, algorithms and keys."""

    def __init__(self, section: JwtSection, root: Path) -> None:
        self.section = section
        self.algorithms = tuple(dict.fromkeys(section.algorithms))
        self._root = root
        self._keys: dict[str, list[Any]] = {}  # algorithm -> candidate keys
        self._hs256: bytes | None = None
        if "HS256" in self.algorithms:
            if section.hs256_secret_file is None:
                raise ValueError("serve.jwt lists HS256 but gives no hs256_secret_file")
            secret = self._path(section.hs256_secret_file).read_bytes().strip()
            if len(secret) < _MIN_HS256_SECRET:
                raise ValueError(f"the HS256 secret needs at least {_MIN_HS256_SECRET} bytes")
            self._hs256 = secret
        if any(a in _KEY_TYPES for a in self.algorithms):
            if not (section.jwks_file or section.jwks_url):
                raise ValueError("serve.jwt needs jwks_file or jwks_url for RS256/ES256")
            self.refresh()

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._root / path

    def refresh(self) -> None:
        """(Re)load the issuer's public keys from the JWKS file or URL."""
        if self.section.jwks_file:
            document = json.loads(self._path(self.section.jwks_file).read_bytes())
        elif self.section.jwks_url:
            if not self.section.jwks_url.startswith("https://"):
                raise ValueError("serve.jwt.jwks_url must be https://")
            with urllib.request.urlopen(self.section.jwks_url, timeout=_FETCH_TIMEOUT) as reply:  # noqa: S310 (https only, checked above)
                document = json.loads(reply.read(1 << 20))
        else:
            return
        keys: dict[str, list[Any]] = {}
        for entry in document.get("keys", []):
            for algorithm, kty in _KEY_TYPES.items():
                if algorithm in self.algorithms and entry.get("kty") == kty:
                    if entry.get("alg") not in (None, algorithm):
                        continue
                    keys.setdefault(algorithm, []).append(jwt.PyJWK(entry, algorithm))
        self._keys = keys

    def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejectedError("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise TokenRejectedError(f"algorithm {str(algorithm)[:16]!r} not accepted")
        if algorithm == "HS256":
            candidates: list[Any] = [self._hs256]
        else:
            kid = header.get("kid")
            candidates = [
                k.key for k in self._keys.get(algorithm, []) if kid is None or k.key_id == kid
            ]
        if not candidates:
            raise TokenRejectedError("no key for this token")
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.section.audience,
                    issuer=self.section.issuer,
                    leeway=self.section.leeway_seconds,
                    options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                )
                break
            except jwt.ExpiredSignatureError:
                raise TokenRejectedError("expired token") from None
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as error:
                raise TokenRejectedError(type(error).__name__) from None
        if claims is None:
            raise TokenRejectedError("bad signature")
        models = claims.get("sealml_models", ["*"])
        return TokenClaims(
            subject=str(claims["sub"])[:128],
            scopes=_scopes(claims),
            models=tuple(str(m) for m in models) if isinstance(models, list) else (),
        )
