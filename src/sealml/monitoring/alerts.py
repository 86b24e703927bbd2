"""Alert rules over one monitoring run, and the signed webhook that carries alerts out.

A webhook body is canonical JSON; the header ``X-Sealml-Signature: sha256=<hex>`` is
HMAC-SHA256 of the body under a shared secret, as GitHub and Stripe sign theirs, so the
receiver can check it came from this workspace unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx

from ..config import AlertRule
from ..crypto.canonical import canonical_json
from ..errors import UsageError
from ..urls import transport_is_protected

SIGNATURE_HEADER = "X-Sealml-Signature"
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: str
    metric: str
    value: float
    threshold: float
    actions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "actions": list(self.actions)}


def _breached(rule: AlertRule, value: float) -> bool:
    return value < rule.below if rule.below is not None else value > rule.above


def evaluate(rules: Sequence[AlertRule], figures: Mapping[str, float]) -> list[Alert]:
    """The rules whose figure crossed their threshold (figures a run lacks are skipped)."""
    return [
        Alert(rule.name, rule.severity, rule.metric, figures[rule.metric],
              rule.below if rule.below is not None else rule.above,
              tuple(rule.actions) if rule.severity == "critical" else ())
        for rule in rules
        if rule.metric in figures and _breached(rule, figures[rule.metric])
    ]  # fmt: skip


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign(secret, body), header)


def check_webhook_url(url: str) -> str:
    """HTTPS, or plain HTTP to a loopback address (a local relay or a test)."""
    if transport_is_protected(url):
        return url
    raise UsageError("monitor.webhook_url must be https:// (http:// only on loopback)")


def post_webhook(url: str, secret: bytes, payload: Mapping[str, Any]) -> int:
    """Deliver one signed payload; the HTTP status, or raises UsageError on failure."""
    body = canonical_json(dict(payload))
    try:
        reply = httpx.post(
            check_webhook_url(url),
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)},
            timeout=TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as error:
        raise UsageError(f"the alert webhook failed: {type(error).__name__}") from None
    if reply.status_code >= 300:
        raise UsageError(f"the alert webhook answered {reply.status_code}")
    return reply.status_code


def send_mail(
    *,
    host: str,
    port: int,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    text: str,
    user: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
) -> None:
    """Send one alert e-mail; the connection is upgraded with STARTTLS (certificate and
    host name checked) before anything, credentials included, is sent."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, ", ".join(recipients), subject
    message.set_content(text)
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with smtplib.SMTP(host, port, timeout=TIMEOUT_SECONDS) as client:
            client.starttls(context=context)
            if user is not None and password is not None:
                client.login(user, password)
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        raise UsageError(f"the alert e-mail failed: {type(error).__name__}") from None
