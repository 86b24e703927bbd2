"""Finding personal data in columns.

Each column is judged by its name and by a sample of its values. Value detectors use the
format's own checksum where one exists (Luhn and issuer prefixes for card numbers, ISO 7064
for IBANs, the published rules for national identifiers), ``phonenumbers`` for phone
numbers and ``ipaddress`` for IP addresses, so random digits rarely pass. Types that have no
verifiable format (names, postal codes, street addresses, dates of birth) need a column
name that says so and values of the right shape.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

STRUCTURED = (
    "email",
    "phone",
    "credit_card",
    "iban",
    "national_id",
    "ip_address",
    "date_of_birth",
)
NAMED = ("person_name", "postcode", "address")
PII_TYPES = STRUCTURED + NAMED

_SAMPLE = 200
_VALUE_THRESHOLD = 0.8
_HINTED_THRESHOLD = 0.5

_HINTS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"e_?mail"),
    "phone": re.compile(r"phone|mobile|tel(ephone)?\b|fax|cell"),
    "credit_card": re.compile(r"card|cc_?n(um|o)|\bpan\b"),  # not "credit": credit_amount
    "iban": re.compile(r"iban|account_?n"),
    "national_id": re.compile(
        r"ssn|social_?sec|national_?id|\bnin\b|passport|tax_?id|\btin\b|\bnir\b|\bbsn\b|\bdni\b"
    ),
    "ip_address": re.compile(r"(^|_)ip($|_)|ip_?addr|ipv[46]"),
    "date_of_birth": re.compile(r"dob|birth|born"),
    "person_name": re.compile(
        r"(first|last|full|sur|given|family|middle|maiden|user)_?name|^name$|customer$|patient$|employee$"
    ),
    "postcode": re.compile(r"zip|post_?code|postal"),
    "address": re.compile(r"address|street|\baddr\b"),
}

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD_PREFIX = re.compile(r"[2-6]")
_POSTCODE = re.compile(
    "|".join(
        (
            r"\d{5}(-\d{4})?",  # US
            r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}",  # UK
            r"\d{4} ?[A-Z]{2}",  # NL
            r"[A-Z]\d[A-Z] ?\d[A-Z]\d",  # CA
            r"\d{3}-\d{4}",  # JP
            r"\d{4,6}",  # most of Europe, AU, IN
        )
    )
)
_NAME = re.compile(r"[A-Z][a-zA-Z'.-]+( [A-Z][a-zA-Z'.-]+){0,3}")
_ADDRESS = re.compile(r"(?=.*\b\d+[a-zA-Z]?\b)(?=.*[^\W\d_]{3,}).*")
# Phone-like presentation: separators, a leading + or a single national trunk 0.
_PHONE_FORMAT = re.compile(r"[\s().+-]|^0[1-9]")
_DATE_SHAPE = re.compile(
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}( .*)?|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}( .*)?"
)


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _is_email(value: str) -> bool:
    return _EMAIL.fullmatch(value) is not None


_REGIONS = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "IN", "CA", "AU")


def _is_phone(value: str, region: str) -> bool:
    """A possible phone number in the configured region or another common one."""
    import phonenumbers

    digits = sum(c.isdigit() for c in value)
    if digits < 7 or digits > 17 or any(c.isalpha() and c not in "xXextEXT" for c in value):
        return False
    if _DATE_SHAPE.fullmatch(value.strip()):
        return False
    regions = (
        (region,)
        if value.lstrip().startswith("+")
        else (region, *(r for r in _REGIONS if r != region))
    )
    for candidate in regions:
        try:
            number = phonenumbers.parse(value, candidate)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            return True
    return False


def _is_card(value: str) -> bool:
    from stdnum import luhn

    digits = re.sub(r"[ -]", "", value)
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    return _CARD_PREFIX.match(digits) is not None and luhn.is_valid(digits)


def _is_iban(value: str) -> bool:
    from stdnum import iban

    compact = value.replace(" ", "")
    return len(compact) >= 15 and compact[:2].isalpha() and bool(iban.is_valid(compact))


def _is_national_id(value: str) -> bool:
    from stdnum.es import dni
    from stdnum.fr import nir
    from stdnum.it import codicefiscale
    from stdnum.nl import bsn
    from stdnum.us import ssn

    if re.fullmatch(r"\d{3}-\d{2}-\d{4}", value):
        return bool(ssn.is_valid(value))
    compact = value.replace(" ", "").replace("-", "").replace(".", "")
    for module in (dni, nir, codicefiscale):
        if module.is_valid(compact):
            return True
    return len(compact) == 9 and compact.isdigit() and bool(bsn.is_valid(compact)) and "-" in value


def _is_ip(value: str) -> bool:
    if "." not in value and ":" not in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for pattern in (
        "%Y-%m-%d",
        "%d/%m/%Y",
        "%m/%d/%Y",
        "%d.%m.%Y",
        "%Y/%m/%d",
        "%Y-%m-%d %H:%M:%S",
    ):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    return None


def _age(value: Any) -> float | None:
    born = _as_date(value)
    return None if born is None else (date.today() - born).days / 365.25


def _is_birth_date(value: Any) -> bool:
    age = _age(value)
    return age is not None and 0 <= age <= 120


def _is_adult_birth_date(value: Any) -> bool:
    """A date that makes sense only as a birth date: 14 to 110 years ago."""
    age = _age(value)
    return age is not None and 14 <= age <= 110


def _detectors(region: str) -> dict[str, Callable[[Any], bool]]:
    return {
        "email": lambda v: _is_email(str(v)),
        "phone": lambda v: _is_phone(str(v), region),
        "birth_date_only": _is_adult_birth_date,
        "credit_card": lambda v: _is_card(str(v)),
        "iban": lambda v: _is_iban(str(v)),
        "national_id": lambda v: _is_national_id(str(v)),
        "ip_address": lambda v: _is_ip(str(v)),
        "date_of_birth": _is_birth_date,
        "person_name": lambda v: _NAME.fullmatch(str(v)) is not None,
        "postcode": lambda v: _POSTCODE.fullmatch(str(v).upper()) is not None,
        "address": lambda v: _ADDRESS.fullmatch(str(v)) is not None and len(str(v)) > 8,
    }


# Detectors whose values alone can establish a type (a phone number must look formatted and
# a date must be 14-110 years ago); the other types need the column name's support too.
_VALUE_ONLY = {
    "email": "email",
    "credit_card": "credit_card",
    "iban": "iban",
    "national_id": "national_id",
    "ip_address": "ip_address",
    "phone_formatted": "phone",
    "birth_date_only": "date_of_birth",
}


@dataclass(frozen=True)
class ColumnFinding:
    """What one column appears to hold."""

    column: str
    pii_type: str | None
    confidence: float
    name_hint: str | None
    matches: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "pii_type": self.pii_type,
            "confidence": round(self.confidence, 3),
            "name_hint": self.name_hint,
            "matches": {k: round(v, 3) for k, v in self.matches.items() if v > 0},
        }


def _sample(series: Any) -> list[Any]:
    values = series.dropna()
    if len(values) > _SAMPLE:
        values = values.sample(_SAMPLE, random_state=0)
    return [v for v in values.tolist() if str(v).strip()]


def _numeric_column(series: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series)) and not bool(
        pd.api.types.is_bool_dtype(series)
    )


def classify_column(name: str, series: Any, region: str = "US") -> ColumnFinding:
    """Judge one column by its name and a sample of its values."""
    normalised = _normalise(str(name))
    hint = next((t for t, pattern in _HINTS.items() if pattern.search(normalised)), None)
    values = _sample(series)
    matches: dict[str, float] = {}
    if values:
        detectors = _detectors(region)
        candidates = list(detectors)
        if _numeric_column(series):
            # Numbers stored as numbers: only card numbers and identifiers can hide there.
            candidates = ["credit_card", "national_id", "phone", "postcode"]
        for detector in candidates:
            hits = [v for v in values if detectors[detector](v)]
            matches[detector] = len(hits) / len(values)
            if detector == "phone":
                formatted = sum(1 for v in hits if _PHONE_FORMAT.search(str(v).strip()))
                matches["phone_formatted"] = formatted / len(values)
    best: str | None = None
    confidence = 0.0
    for detector, pii_type in _VALUE_ONLY.items():
        share = matches.get(detector, 0.0)
        if share >= _VALUE_THRESHOLD and share > confidence:
            best, confidence = pii_type, share
    if hint is not None:
        share = matches.get(hint, 0.0)
        if share >= _HINTED_THRESHOLD and (best is None or share >= confidence):
            best, confidence = hint, min(1.0, 0.5 + share / 2 + 0.1)
        elif best == hint:
            confidence = min(1.0, confidence + 0.1)
    shown = {k: v for k, v in matches.items() if k in PII_TYPES}
    return ColumnFinding(str(name), best, confidence, hint, shown)


def scan_frame(frame: Any, region: str = "US") -> list[ColumnFinding]:
    """One finding per column."""
    return [classify_column(str(c), frame[c], region) for c in frame.columns]
