"""Time-based one-time passwords (RFC 6238) that confirm sensitive approvals.

Codes are six digits over 30-second steps (what authenticator apps use). A code is accepted
for the current step or one step either side (clock drift), and each step can be used once:
the caller stores the returned step and passes it back, so a code seen once is dead.
"""

from __future__ import annotations

import hmac
import time

import pyotp

from ..errors import AuthenticationError

DIGITS = 6
PERIOD = 30
DRIFT_STEPS = 1


def new_secret() -> str:
    """A fresh 160-bit base32 secret."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app imports (as text or a QR code)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(
        name=account, issuer_name=issuer
    )


def current_code(secret: str, now: float | None = None) -> str:
    """The code an authenticator shows at *now* (for tests and service principals)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).at(now or time.time())


def accept(secret: str, code: str, last_step: int, now: float | None = None) -> int:
    """The time step *code* belongs to; raises AuthenticationError when it is wrong,
    outside the drift window, or from a step at or before *last_step* (a replay)."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
    moment = time.time() if now is None else now
    step = int(moment // PERIOD)
    given = code.strip().encode()
    matched = None
    for candidate in range(step - DRIFT_STEPS, step + DRIFT_STEPS + 1):
        # Compare against every step in the window so timing does not reveal which matched.
        if hmac.compare_digest(given, totp.at(candidate * PERIOD).encode()):
            matched = candidate
    if matched is None:
        raise AuthenticationError("the one-time code is wrong or has expired")
    if matched <= last_step:
        raise AuthenticationError("the one-time code was already used")
    return matched
