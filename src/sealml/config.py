"""``sealml.toml``: the workspace configuration, validated with pydantic.

Relative paths are relative to the folder holding ``sealml.toml``. The database URL and the
blob store are settings, so PostgreSQL and S3-compatible stores plug in behind the same
interfaces as the embedded defaults.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .access.policy import DEFAULT_ROLES
from .errors import ConfigError
from .fsutil import write_private
from .store.s3 import S3Location

CONFIG_NAME = "sealml.toml"
STATE_DIR = ".sealml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkspaceSection(_Section):
    id: str
    name: str = "sealml"
    created_at: str


class DatabaseSection(_Section):
    url: str = f"sqlite:///{STATE_DIR}/sealml.db"


class BlobsSection(_Section):
    # "local": files under *path*; "s3": objects under *prefix* in *bucket* of an
    # S3-compatible service (credentials from the AWS chain, never from this file).
    backend: Literal["local", "s3"] = "local"
    path: str = f"{STATE_DIR}/blobs"
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    ca_bundle: str | None = None

    @model_validator(mode="after")
    def _check_s3(self) -> BlobsSection:
        if self.backend == "s3":
            self.s3_location()
        return self

    @classmethod
    def in_bucket(cls, location: S3Location) -> BlobsSection:
        """The section naming *location* (the inverse of :meth:`s3_location`)."""
        return cls(
            backend="s3",
            bucket=location.bucket,
            prefix=location.prefix,
            endpoint_url=location.endpoint_url,
            region=location.region,
            ca_bundle=location.ca_bundle,
        )

    def s3_location(self) -> S3Location:
        """The bucket and prefix of an ``s3`` backend (a ConfigError when incomplete)."""
        if not self.bucket:
            raise ConfigError("blobs.backend = 's3' needs blobs.bucket")
        return S3Location(
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint_url=self.endpoint_url,
            region=self.region,
            ca_bundle=self.ca_bundle,
        )


class KdfSection(_Section):
    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 2


class KeysSection(_Section):
    # KEKs: "local" in the keystore file, "pkcs11" in a PKCS#11 token (the keystore then
    # keeps only the workspace's signing key and named secrets).
    provider: Literal["local", "pkcs11"] = "local"
    keystore: str = f"{STATE_DIR}/keystore.json"
    passphrase_file: str | None = None
    hsm_module: str | None = None
    hsm_token: str | None = None
    hsm_pin_file: str | None = None
    kdf: KdfSection = Field(default_factory=KdfSection)


class SealSection(_Section):
    segment_size: int = 1 << 20

    @field_validator("segment_size")
    @classmethod
    def _segment(cls, value: int) -> int:
        if not 4096 <= value <= 64 << 20:
            raise ValueError("segment_size must be between 4 KiB and 64 MiB")
        return value


class LedgerSection(_Section):
    origin: str
    verifier_key: str


class DataSection(_Section):
    allowed_sources: list[str] = Field(default_factory=list)
    ca_bundle: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    max_bytes: int = Field(default=4 << 30, ge=1)
    max_line_bytes: int = Field(default=64 << 20, ge=1)


class PipelineSection(_Section):
    ray_address: str | None = None
    threads: int | None = Field(default=None, ge=1, le=1024)
    # Defaults for stages that declare no limits of their own, applied where the executor
    # runs each stage in a process of its own (time: sandbox and Ray; memory: sandbox).
    stage_time_limit_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    stage_memory_limit_mib: int | None = Field(default=None, ge=64, le=1 << 24)


class AccessSection(_Section):
    session_ttl_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    # `sealml doctor` warns about signing keys in use for longer (rotate-key renews them).
    max_key_age_days: int = Field(default=365, ge=1, le=100 * 365)
    roles: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_ROLES))


class GateSection(_Section):
    """What a model version needs before an alias may point at it (beyond a valid
    signature and a clean scan, which every alias needs)."""

    require_provenance: bool = False
    require_evaluation: bool = False
    # Where an evaluation is required: its signed provenance must show it evaluated this
    # very model on data that is not among the model's training inputs.
    require_held_out_test: bool = True
    # When set: the version's newest `sealml model vulnerabilities` check must be at most
    # this many days old and have found no advisory affecting its packages.
    max_vulnerability_check_age_days: int | None = Field(default=None, ge=0, le=3650)
    min_metrics: dict[str, float] = Field(default_factory=dict)
    max_metrics: dict[str, float] = Field(default_factory=dict)


def _default_gates() -> dict[str, GateSection]:
    return {"production": GateSection(require_provenance=True, require_evaluation=True)}


class RegistrySection(_Section):
    """Promotion rules. Like roles, they are in force only once approved by an admin."""

    two_person_aliases: list[str] = Field(default_factory=lambda: ["production"])
    gates: dict[str, GateSection] = Field(default_factory=_default_gates)


JwtAlgorithm = Literal["RS256", "ES256", "HS256"]
_ASYMMETRIC: tuple[JwtAlgorithm, ...] = ("RS256", "ES256")


class JwtSection(_Section):
    """Bearer tokens from an external issuer. RS256/ES256 keys come from a JWKS file or
    URL; HS256 is accepted only when listed and given a secret file."""

    issuer: str
    audience: str = "sealml"
    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: list(_ASYMMETRIC))
    jwks_file: str | None = None
    jwks_url: str | None = None
    hs256_secret_file: str | None = None
    leeway_seconds: int = Field(default=30, ge=0, le=600)


class ServeSection(_Section):
    """``sealml serve``: transport, limits, output policy and logging."""

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None  # set for mutual TLS: clients must present a certificate
    output: Literal["label", "probability"] = "label"
    round_digits: int = Field(default=2, ge=0, le=6)
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    range_margin: float = Field(default=0.1, ge=0, le=10)
    ood_threshold: float = Field(default=4.0, gt=0)
    key_rate: float = Field(default=50.0, gt=0)  # requests per second per key or principal
    key_burst: int = Field(default=100, ge=1)
    address_rate: float = Field(default=100.0, gt=0)  # per source address
    address_burst: int = Field(default=200, ge=1)
    redis_url: str | None = None
    poll_seconds: float = Field(default=2.0, gt=0, le=3600)
    log_sample: float = Field(default=1.0, ge=0, le=1)  # share of predictions logged (sealed)
    ledger_sample: float = Field(default=0.01, ge=0, le=1)  # share of predictions in the ledger
    extraction_window: int = Field(default=200, ge=10, le=100_000)
    extraction_throttle: bool = True
    jwt: JwtSection | None = None


class AlertRule(_Section):
    """Raise an alert when a monitoring figure is above *above* (or, when *below* is set,
    under *below*); critical rules may contain the model at once."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    metric: Literal[
        "drifted_columns",
        "prediction_drift",
        "ood_rate",
        "missing_rate_change",
        "denials",
        "schema_violations",
        "rate_limited",
        "extraction_alerts",
        "accuracy",
        "accuracy_drop",
    ]
    above: float = 0.0
    below: float | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    actions: list[Literal["freeze", "rollback", "revoke-key"]] = Field(default_factory=list)


def _default_rules() -> list[AlertRule]:
    return [AlertRule(name="input-drift", metric="drifted_columns", above=0.0)]


class MonitorSection(_Section):
    """``sealml monitor``: what is compared, when to alert, where alerts go."""

    window: int = Field(default=10_000, ge=1)
    mode: Literal["default", "evidently"] = "default"
    ood_threshold: float = Field(default=4.0, gt=0)
    cooldown_minutes: float = Field(default=60.0, ge=0)
    rules: list[AlertRule] = Field(default_factory=_default_rules)
    webhook_url: str | None = None  # https (http only on loopback), HMAC-signed body
    webhook_secret_file: str | None = None
    smtp_host: str | None = None  # e-mail over SMTP, always upgraded with STARTTLS
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_from: str | None = None
    smtp_to: list[str] = Field(default_factory=list)
    smtp_user: str | None = None
    smtp_password_file: str | None = None
    smtp_ca_file: str | None = None  # a private CA for the mail server's certificate


class Config(_Section):
    """The whole of ``sealml.toml``."""

    workspace: WorkspaceSection
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    blobs: BlobsSection = Field(default_factory=BlobsSection)
    keys: KeysSection = Field(default_factory=KeysSection)
    seal: SealSection = Field(default_factory=SealSection)
    ledger: LedgerSection
    access: AccessSection = Field(default_factory=AccessSection)
    pipeline: PipelineSection = Field(default_factory=PipelineSection)
    data: DataSection = Field(default_factory=DataSection)
    registry: RegistrySection = Field(default_factory=RegistrySection)
    serve: ServeSection = Field(default_factory=ServeSection)
    monitor: MonitorSection = Field(default_factory=MonitorSection)

    def dump(self) -> bytes:
        data: dict[str, Any] = self.model_dump(exclude_none=True)
        return tomli_w.dumps(data).encode()


def load_config(path: Path) -> Config:
    """Read and validate ``sealml.toml``; any problem is a one-line ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no workspace at {path.parent} (missing {CONFIG_NAME})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    return _parse_config(text, path)


def set_options(path: Path, table: str, values: dict[str, str]) -> Config:
    """Set *values* in *table* of the ``sealml.toml`` at *path*, keeping the rest of the
    file as its authors wrote it (comments, order); the result is checked before it
    atomically replaces the file (0600). Returns the new configuration."""
    import tomlkit

    load_config(path)
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    section = document.get(table)
    if section is None:
        section = tomlkit.table()
        document.add(table, section)
    for name, value in values.items():
        section[name] = value
    text = tomlkit.dumps(document)
    config = _parse_config(text, path)
    write_private(path, text.encode("utf-8"))
    return config


def _parse_config(text: str, path: Path) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except RecursionError:  # tomllib parses nested arrays recursively
        raise ConfigError(f"{path} is not valid TOML: nested too deeply") from None
    try:
        return Config.model_validate(raw)
    except ConfigError as error:  # raised by a section's own check
        raise ConfigError(f"{path}: {error.message}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


def resolve(root: Path, value: str) -> Path:
    """A config path made absolute against the workspace folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def shared_outside(root: Path, config: Config) -> str | None:
    """What a copy of the workspace folder would still share with the original (a server
    database, a bucket, files elsewhere), or None when the folder holds everything."""
    root = root.resolve()

    def inside(path: Path) -> bool:
        return path.resolve().is_relative_to(root)

    url = database_url(root, config.database.url)
    prefix = "sqlite:///"
    if not url.startswith(prefix) or not inside(Path(url[len(prefix) :])):
        return f"its database is {config.database.url!r}"
    if config.blobs.backend != "local":
        return f"its blobs are in {config.blobs.s3_location()}"
    if not inside(resolve(root, config.blobs.path)):
        return f"its blobs are in {config.blobs.path!r}"
    if not inside(resolve(root, config.keys.keystore)):
        return f"its keystore is {config.keys.keystore!r}"
    return None


def database_url(root: Path, url: str) -> str:
    """Make a relative SQLite path absolute against the workspace folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(root / url[len(prefix) :])
    return url
