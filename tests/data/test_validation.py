"""Schema validation: every violation with its rows; invalid schemas are clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from sealml.data.validation import infer_schema, load_schema, parse_schema, validate
from sealml.errors import UsageError

SCHEMA = {
    "columns": {
        "age": {"dtype": "int", "min": 17, "max": 90},
        "sex": {"dtype": "str", "allowed": ["Male", "Female"]},
        "email": {"dtype": "str", "regex": "^[^@ ]+@[^@ ]+$", "unique": True, "nullable": True},
    },
    "rows": {"min": 2},
}


def test_every_violation_is_reported_with_its_rows() -> None:
    frame = pd.DataFrame(
        {
            "age": [25, "forty", 40, 200, None],  # mixed types
            "sex": ["Male", "Female", "Other", "Male", "Male"],
            "email": ["a@b.c", "bad", "c@d.e", "a@b.c", None],
            "extra": [1, 2, 3, 4, 5],
        }
    )
    report, _ = validate(frame, parse_schema(SCHEMA))
    found = {(v.column, v.check.split("(")[0]): v.rows for v in report.violations}
    assert found[("age", "type int")] == [1]
    assert found[("age", "not_nullable")] == [4]
    assert found[("age", "less_than_or_equal_to")] == [3]
    assert found[("sex", "isin")] == [2]
    assert found[("email", "str_matches")] == [1]
    assert found[("email", "field_uniqueness")] == [0, 3]
    assert ("(table)", "column_in_schema") in found
    assert not report.ok


def test_valid_dataset_passes_and_is_coerced() -> None:
    frame = pd.DataFrame({"age": ["30", "41"], "sex": ["Male", "Female"], "email": ["a@b.c", None]})
    report, coerced = validate(frame, parse_schema(SCHEMA))
    assert report.ok and coerced["age"].tolist() == [30, 41]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("columns: [unclosed", "not valid YAML"),
        ("columns:\n  age: {dtype: integer}\n", "columns.age.dtype"),
        ("columns:\n  age: {dtype: int, minimum: 3}\n", "minimum"),
        ("columns:\n  x: {dtype: str, regex: '(['}\n", "invalid regular expression"),
        ("- just a list\n", "found a list"),
    ],
)
def test_invalid_schema_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as caught:
        load_schema(path)
    assert "\n" not in str(caught.value)


def test_inferred_schema_accepts_its_reference_and_flags_drift() -> None:
    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "german_credit.csv"
    reference = pd.read_csv(data)
    schema = parse_schema(yaml.safe_load(yaml.safe_dump(infer_schema(reference))))
    assert validate(reference, schema)[0].ok
    drifted = reference.copy()
    drifted["duration_months"] = drifted["duration_months"].astype(object)
    drifted.loc[3, "duration_months"] = 999
    drifted.loc[5, "checking_status"] = "A99"
    rows = {v.column: v.rows for v in validate(drifted, schema)[0].violations}
    assert rows == {"duration_months": [3], "checking_status": [5]}
