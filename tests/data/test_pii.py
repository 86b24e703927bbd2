"""PII detection, protective actions and the anonymity report."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from faker import Faker

from sealml.data.pii import classify_column, scan_frame
from sealml.data.pseudonymise import anonymity, apply_actions, parse_actions, pseudonym
from sealml.errors import UsageError


@pytest.fixture
def people() -> pd.DataFrame:
    fake = Faker("en_US")
    Faker.seed(3)
    rows = 120
    return pd.DataFrame(
        {
            "contact": [fake.email() for _ in range(rows)],
            "col_a": [fake.credit_card_number() for _ in range(rows)],
            "col_b": [fake.ssn() for _ in range(rows)],
            "col_c": [fake.iban() for _ in range(rows)],
            "col_d": [fake.ipv4() for _ in range(rows)],
            "mobile": [fake.phone_number() for _ in range(rows)],
            "dob": [fake.date_of_birth(minimum_age=18).isoformat() for _ in range(rows)],
            "full_name": [fake.name() for _ in range(rows)],
            "order_no": [str(fake.random_number(digits=16, fix_len=True)) for _ in range(rows)],
            "city": [fake.city() for _ in range(rows)],
            "amount": [fake.pyfloat(min_value=1, max_value=100) for _ in range(rows)],
        }
    )


def test_columns_are_classified(people: pd.DataFrame) -> None:
    found = {f.column: f.pii_type for f in scan_frame(people)}
    assert found == {
        "contact": "email",
        "col_a": "credit_card",
        "col_b": "national_id",
        "col_c": "iban",
        "col_d": "ip_address",
        "mobile": "phone",
        "dob": "date_of_birth",
        "full_name": "person_name",
        "order_no": None,
        "city": None,
        "amount": None,
    }


def test_checksums_reject_look_alikes() -> None:
    wrong_luhn = pd.Series(["4111111111111112"] * 50)
    assert classify_column("values", wrong_luhn).pii_type is None
    assert classify_column("values", pd.Series(["4111111111111111"] * 50)).pii_type == "credit_card"


def test_actions(people: pd.DataFrame) -> None:
    key, token_key = os.urandom(32), os.urandom(32)
    plan = parse_actions(
        {
            "contact": "pseudonym",
            "col_a": {"action": "mask", "keep_last": 4},
            "col_b": "tokenise",
            "dob": {"action": "generalise", "granularity": "year"},
            "amount": {"action": "generalise", "band": 25},
            "full_name": "drop",
        }
    )
    applied = apply_actions(people, plan, pseudonym_key=key, token_key=token_key)
    out = applied.frame
    assert "full_name" not in out
    assert out["contact"][0] == pseudonym(key, people["contact"][0])
    assert out["contact"][0] != pseudonym(os.urandom(32), people["contact"][0])
    assert out["col_a"][0].endswith(people["col_a"][0][-4:]) and "*" in out["col_a"][0]
    assert applied.vault[out["col_b"][0]] == people["col_b"][0]
    assert out["dob"][0] == people["dob"][0][:4]
    assert out["amount"].str.fullmatch(r"\d+-\d+").all()
    again = apply_actions(people, plan, pseudonym_key=key, token_key=token_key)
    assert again.frame["contact"].tolist() == out["contact"].tolist()


@pytest.mark.parametrize(
    "bad", [{"x": "encrypt"}, {"x": {"action": "mask", "keep_last": -1}}, ["x"]]
)
def test_bad_actions(bad: object) -> None:
    with pytest.raises(UsageError):
        parse_actions(bad)


def test_k_anonymity_and_suppression() -> None:
    frame = pd.DataFrame(
        {
            "age": [30, 30, 30, 41, 41, 52],
            "zip": ["100", "100", "100", "200", "200", "300"],
            "disease": ["flu", "cold", "flu", "flu", "flu", "cold"],
        }
    )
    report, _ = anonymity(frame, ["age", "zip"], "disease")
    assert (report.k, report.classes, report.l_diversity) == (1, 3, 1)
    report, kept = anonymity(frame, ["age", "zip"], "disease", target_k=2)
    assert (report.k, report.suppressed, len(kept), report.l_diversity) == (2, 1, 5, 1)
    with pytest.raises(UsageError, match="no column"):
        anonymity(frame, ["missing"])


def test_credit_columns_that_are_not_cards_get_no_card_hint() -> None:
    """German credit's credit_amount / credit_history are amounts and codes, not cards."""
    for name in ("credit_amount", "credit_history", "existing_credits"):
        assert classify_column(name, pd.Series([1200, 3400] * 20)).name_hint is None
    assert classify_column("card_number", pd.Series(["x"] * 5)).name_hint == "credit_card"
    assert classify_column("cc_num", pd.Series(["x"] * 5)).name_hint == "credit_card"
