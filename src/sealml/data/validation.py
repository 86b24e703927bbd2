"""Dataset validation: a declared schema, checked with pandera, reported row by row.

A schema is declared in Python (a dict) or YAML::

    columns:
      age:   {dtype: int, min: 17, max: 90}
      sex:   {dtype: str, allowed: [Male, Female]}
      email: {dtype: str, regex: "^[^@ ]+@[^@ ]+$", unique: true, nullable: true}
    rows: {min: 1000}
    strict: true        # columns not declared are violations

or inferred from a trusted reference dataset (:func:`infer_schema`) and then reviewed.
Values are coerced to the declared type, so a cell of the wrong type (a mixed-type column)
is reported with its row like any other violation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import UsageError
from ..yamlfile import read_yaml

DType = Literal["int", "float", "str", "bool", "datetime", "category"]
_MAX_EXAMPLES = 5
_INFER_CATEGORIES = 20


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: DType
    nullable: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float | bool] | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"invalid regular expression: {error}") from None
        return value


class RowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int | None = None
    max: int | None = None


class SchemaSpec(BaseModel):
    """A dataset schema as declared by a user."""

    model_config = ConfigDict(extra="forbid")
    columns: dict[str, ColumnSpec]
    rows: RowSpec = RowSpec()
    strict: bool = True


def parse_schema(data: Any, what: str = "schema") -> SchemaSpec:
    """Validate a schema declaration; any problem is a one-line UsageError."""
    if not isinstance(data, dict):
        found = (
            "nothing" if data is None else "a list" if isinstance(data, list) else "a single value"
        )
        raise UsageError(f"{what}: expected a mapping with a 'columns' section, found {found}")
    try:
        return SchemaSpec.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise UsageError(f"{what}: {where}: {first['msg']}") from None


def load_schema(path: Path) -> SchemaSpec:
    """Read a YAML schema file."""
    data = read_yaml(path, "schema file")
    return parse_schema(data, f"schema file {path}")


@dataclass
class Violation:
    """One failed check, with every offending row (by index label)."""

    column: str
    check: str
    rows: list[Any]
    examples: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "check": self.check,
            "count": len(self.rows),
            "rows": self.rows,
            "examples": self.examples,
        }


@dataclass
class ValidationReport:
    """The outcome of validating one dataset."""

    rows: int
    columns: int
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "columns": self.columns,
            "violations": [v.to_dict() for v in self.violations],
        }


_PANDERA_TYPES = {
    "int": "Int64",
    "float": "float64",
    "str": "str",
    "bool": "boolean",
    "datetime": "datetime64[ns]",
    "category": "category",
}


def _pandera_schema(spec: SchemaSpec) -> Any:
    import pandera.pandas as pa

    columns = {}
    for name, column in spec.columns.items():
        checks = []
        if column.min is not None:
            checks.append(pa.Check.ge(column.min))
        if column.max is not None:
            checks.append(pa.Check.le(column.max))
        if column.allowed is not None:
            checks.append(pa.Check.isin(column.allowed))
        if column.regex is not None:
            checks.append(pa.Check.str_matches(column.regex))
        columns[name] = pa.Column(
            _PANDERA_TYPES[column.dtype],
            checks=checks,
            nullable=column.nullable,
            unique=column.unique,
            coerce=True,
            required=True,
        )
    return pa.DataFrameSchema(columns, strict=spec.strict, coerce=True)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def validate(frame: Any, spec: SchemaSpec) -> tuple[ValidationReport, Any]:
    """Check *frame* against *spec*; returns the report and the coerced frame."""
    import pandera.errors as pe

    report = ValidationReport(rows=len(frame), columns=len(frame.columns))
    if spec.rows.min is not None and len(frame) < spec.rows.min:
        report.violations.append(
            Violation("(rows)", f"at least {spec.rows.min} rows", [], [len(frame)])
        )
    if spec.rows.max is not None and len(frame) > spec.rows.max:
        report.violations.append(
            Violation("(rows)", f"at most {spec.rows.max} rows", [], [len(frame)])
        )
    frame, wrong_type = _precoerce(frame, spec)
    report.violations.extend(wrong_type.values())
    try:
        coerced = _pandera_schema(spec).validate(frame, lazy=True)
    except pe.SchemaErrors as errors:
        cases = errors.failure_cases
        grouped: dict[tuple[str, str], Violation] = {}
        for record in cases.to_dict("records"):
            raw_column = record.get("column")
            column = str(raw_column) if isinstance(raw_column, str) else "(table)"
            check = str(record.get("check"))
            violation = grouped.setdefault((column, check), Violation(column, check, [], []))
            index = record.get("index")
            if index is not None and index == index:  # NaN means "no particular row"
                already = column in wrong_type and _plain(index) in wrong_type[column].rows
                if check == "not_nullable" and already:
                    continue  # already reported as a value of the wrong type
                violation.rows.append(_plain(index))
            if len(violation.examples) < _MAX_EXAMPLES:
                violation.examples.append(_plain(record.get("failure_case")))
        report.violations.extend(v for v in grouped.values() if v.rows or v.examples)
        return report, frame
    return report, coerced


def _precoerce(frame: Any, spec: SchemaSpec) -> tuple[Any, dict[str, Violation]]:
    """Convert numeric and date columns first, so a cell of the wrong type is reported as
    such (with its row) and the range checks still see every other cell."""
    import pandas as pd

    frame = frame.copy()
    wrong: dict[str, Violation] = {}
    for name, column in spec.columns.items():
        if name not in frame.columns or column.dtype not in ("int", "float", "datetime"):
            continue
        series = frame[name]
        if column.dtype == "datetime":
            converted = pd.to_datetime(series, errors="coerce")
        else:
            converted = pd.to_numeric(series, errors="coerce")
        bad = series.notna() & converted.isna()
        if bad.any():
            rows = [_plain(i) for i in series.index[bad]]
            examples = [_plain(v) for v in series[bad].head(_MAX_EXAMPLES)]
            wrong[name] = Violation(name, f"type {column.dtype}", rows, examples)
        frame[name] = converted
    return frame, wrong


def infer_schema(frame: Any) -> dict[str, Any]:
    """A schema that a trusted reference dataset satisfies, to review and tighten."""
    import pandas as pd

    columns: dict[str, Any] = {}
    for name in frame.columns:
        series = frame[name]
        entry: dict[str, Any] = {}
        if pd.api.types.is_bool_dtype(series):
            entry["dtype"] = "bool"
        elif pd.api.types.is_integer_dtype(series):
            entry["dtype"] = "int"
        elif pd.api.types.is_float_dtype(series):
            non_null = series.dropna()
            whole = bool(len(non_null)) and bool((non_null == non_null.round()).all())
            entry["dtype"] = "int" if whole else "float"
        elif pd.api.types.is_datetime64_any_dtype(series):
            entry["dtype"] = "datetime"
        else:
            entry["dtype"] = "str"
        if series.isna().any():
            entry["nullable"] = True
        if entry["dtype"] in ("int", "float") and series.notna().any():
            entry["min"] = _plain(series.min())
            entry["max"] = _plain(series.max())
        if entry["dtype"] == "str":
            distinct = series.dropna().unique()
            if 0 < len(distinct) <= _INFER_CATEGORIES:
                entry["allowed"] = sorted(str(v) for v in distinct)
        columns[str(name)] = entry
    return {"columns": columns, "rows": {"min": 1}, "strict": True}
