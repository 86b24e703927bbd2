"""PII detection on generated data with known ground truth: per-type precision and recall.

Faker (seeded) generates tables whose columns are either one PII type or a look-alike that
is not personal data (order numbers, product codes, UUIDs, prices, transaction dates,
cities, company names, free text). Half the PII columns get neutral names (``col_7``) so
values must speak for themselves. Also checks that keyed pseudonyms are stable across runs
and unlinkable without the key. Prints one JSON object.
Targets: precision and recall >= 0.95 per structured type.

Usage: python bench/pii.py [--tables 40] [--rows 300]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from typing import Any

from faker import Faker


def generators(fake: Faker) -> dict[str, Any]:
    return {
        "email": fake.email,
        "phone": fake.phone_number,
        "credit_card": fake.credit_card_number,
        "iban": fake.iban,
        "national_id": fake.ssn,
        "ip_address": lambda: fake.ipv4() if random.random() < 0.7 else fake.ipv6(),
        "date_of_birth": lambda: fake.date_of_birth(minimum_age=18, maximum_age=90).isoformat(),
        "person_name": fake.name,
        "postcode": fake.postcode,
        "address": lambda: fake.street_address(),
    }


def decoys(fake: Faker) -> dict[str, Any]:
    return {
        "order_number": lambda: str(fake.random_number(digits=16, fix_len=True)),
        "invoice_id": lambda: fake.bothify("INV-####-????"),
        "product_code": lambda: fake.ean13(),
        "uuid": fake.uuid4,
        "price": lambda: round(random.uniform(1, 500), 2),
        "quantity": lambda: random.randint(1, 40),
        "transaction_date": lambda: fake.date_between("-2y", "today").isoformat(),
        "city": fake.city,
        "company": fake.company,
        "comment": fake.sentence,
        "status": lambda: random.choice(["open", "closed", "pending"]),
        "ratio": random.random,
        "sku": lambda: fake.bothify("??-#####"),
        "version": lambda: (
            f"{random.randint(0, 9)}.{random.randint(0, 20)}.{random.randint(0, 99)}"
        ),
    }


HINTED_NAMES = {
    "email": ["email", "contact_email", "e_mail"],
    "phone": ["phone", "mobile_number", "telephone"],
    "credit_card": ["card_number", "cc_num", "credit_card"],
    "iban": ["iban", "account_number"],
    "national_id": ["ssn", "social_security_number", "national_id"],
    "ip_address": ["ip", "client_ip", "ip_address"],
    "date_of_birth": ["dob", "date_of_birth", "birth_date"],
    "person_name": ["full_name", "customer", "first_name"],
    "postcode": ["zip", "postcode", "postal_code"],
    "address": ["address", "street_address", "home_address"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tables", type=int, default=40)
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    import pandas as pd

    from sealml.data.pii import NAMED, PII_TYPES, STRUCTURED, scan_frame

    random.seed(7)
    truth: list[str | None] = []
    predicted: list[str | None] = []
    started = time.perf_counter()
    columns_seen = 0
    for table in range(args.tables):
        fake = Faker(
            ["en_US", "en_GB", "de_DE", "fr_FR", "nl_NL"][table % 5] if table % 3 else "en_US"
        )
        Faker.seed(1000 + table)
        fake.seed_instance(1000 + table)
        pii = generators(fake)
        decoy = decoys(fake)
        columns: dict[str, list[Any]] = {}
        labels: dict[str, str | None] = {}
        for index, (pii_type, make) in enumerate(pii.items()):
            if pii_type == "national_id" and not fake.locales[0].startswith("en_US"):
                make = Faker("en_US").ssn
            if (table + index) % 2 and pii_type in STRUCTURED:
                name = f"col_{index}"
            else:
                name = random.choice(HINTED_NAMES[pii_type])
            name = f"{name}_{table}_{index}" if name in columns else name
            columns[name] = [make() for _ in range(args.rows)]
            labels[name] = pii_type
        for name, make in decoy.items():
            columns[name] = [make() for _ in range(args.rows)]
            labels[name] = None
        frame = pd.DataFrame(columns)
        for finding in scan_frame(frame):
            truth.append(labels[finding.column])
            predicted.append(finding.pii_type)
            columns_seen += 1
    seconds = time.perf_counter() - started
    per_type = {}
    for pii_type in PII_TYPES:
        tp = sum(
            1 for t, p in zip(truth, predicted, strict=True) if t == pii_type and p == pii_type
        )
        fp = sum(
            1 for t, p in zip(truth, predicted, strict=True) if t != pii_type and p == pii_type
        )
        fn = sum(
            1 for t, p in zip(truth, predicted, strict=True) if t == pii_type and p != pii_type
        )
        per_type[pii_type] = {
            "precision": round(tp / (tp + fp), 3) if tp + fp else 1.0,
            "recall": round(tp / (tp + fn), 3) if tp + fn else 1.0,
            "support": tp + fn,
        }
    confusions = Counter(f"{t}->{p}" for t, p in zip(truth, predicted, strict=True) if t != p)
    met = all(
        per_type[t]["precision"] >= 0.95 and per_type[t]["recall"] >= 0.95 for t in STRUCTURED
    )
    print(
        json.dumps(
            {
                "benchmark": "pii",
                "tables": args.tables,
                "rows_per_table": args.rows,
                "columns": columns_seen,
                "seconds": round(seconds, 2),
                "structured": {t: per_type[t] for t in STRUCTURED},
                "named_types": {t: per_type[t] for t in NAMED},
                "confusions": dict(confusions.most_common(10)),
                "pseudonyms": pseudonym_check(),
                "targets": {"structured_precision_and_recall>=0.95": met},
            }
        )
    )


def pseudonym_check() -> dict[str, Any]:
    """Keyed pseudonyms: stable for one key, different (unlinkable) under another."""
    import os

    from sealml.data.pseudonymise import pseudonym

    key, other = os.urandom(32), os.urandom(32)
    values = [f"user{i}@example.org" for i in range(1000)]
    first = [pseudonym(key, v) for v in values]
    again = [pseudonym(key, v) for v in values]
    foreign = [pseudonym(other, v) for v in values]
    return {
        "stable_across_runs": first == again,
        "distinct_tokens": len(set(first)) == len(values),
        "shared_with_another_key": len(set(first) & set(foreign)),
    }


if __name__ == "__main__":
    main()
