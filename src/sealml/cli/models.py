"""``sealml scan`` and ``sealml model ...``: scan, import, sign, verify, register, approve,
promote, roll back, revoke and inspect models.

A model reference is ``NAME``, ``NAME@ALIAS`` or ``NAME@VERSION`` (``NAME@3``, ``NAME@v3``).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import UsageError
from ..models import openssf
from ..models.scanner import ScanResult, report_json, scan_path
from ..workspace import ModelVersion, Workspace
from .common import JsonOption, open_workspace, out, print_json, print_table, styled, write_or_print

app = typer.Typer(help="Model supply chain: scan, sign, register, promote.", no_args_is_help=True)

WATERMARK_P_VALUE = 1e-6
CodeOption = typer.Option(
    ...,
    "--code",
    envvar="SEALML_TOTP_CODE",
    help="The current code from your authenticator app.",
)


def _split(ref: str) -> tuple[str, str | None]:
    name, _, tail = ref.partition("@")
    return name.strip(), (tail.strip() or None) if "@" in ref else None


def _selector_or_latest(workspace: Workspace, name: str, selector: str | None) -> str:
    """The alias or version given, else the newest version of *name*."""
    return selector if selector is not None else str(workspace.versions(name)[0].version)


def _print_scan(result: ScanResult, as_json: bool) -> None:
    if as_json:
        out.print(report_json(result))
        return
    style = {"safe": "green", "unsafe": "bold red"}.get(result.verdict, "yellow")
    counts = f"{result.files} files, {result.members} archive members"
    if result.unrecognised:
        counts += f", {result.unrecognised} of no model format"
    out.print(
        styled(
            (result.verdict, style),
            f"  {result.path}  ({counts}, {len(result.findings)} findings)",
        )
    )
    for finding in result.findings:
        out.print(f"  {finding.severity:8} {finding.kind:10} {finding.location}: {finding.detail}")


def scan(
    ctx: typer.Context,
    path: Path | None = typer.Argument(None, help="File or folder to scan."),
    artifact: str | None = typer.Option(
        None, "--artifact", help="Scan a sealed model artifact and record the report."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Scan model files without loading them. Exit 1 unless the verdict is safe."""
    if (path is None) == (artifact is None):
        raise UsageError("give a PATH or --artifact, not both")
    if path is not None:
        result = scan_path(path)
    else:
        assert artifact is not None
        with open_workspace(ctx) as workspace:
            result, report_id = workspace.scan_artifact(artifact)
        if not as_json:
            out.print(f"recorded scan report {report_id}")
    _print_scan(result, as_json)
    if result.verdict != "safe":
        raise typer.Exit(1)


def _advisories_line(checked: tuple[str, tuple[str, ...]] | None) -> str:
    if checked is None:
        return "never checked (sealml model vulnerabilities)"
    when, findings = checked
    return f"{len(findings)} found: {', '.join(findings)}" if findings else f"none at {when}"


def _show_version(version: ModelVersion, as_json: bool) -> None:
    if as_json:
        print_json(version.to_dict())
        return
    aliases = ", ".join(version.aliases) or "-"
    out.print(
        styled((version.name, "bold"), f" v{version.version}  {version.status}  aliases: {aliases}")
    )
    for label, value in (
        ("artifact", f"{version.artifact_id} ({version.artifact_digest})"),
        ("signature", version.signature_id),
        ("scan report", version.scan_id),
        ("sbom", version.sbom_id or "none"),
        ("provenance", version.provenance_id or "none"),
        ("evaluation", version.evaluation_id or "none"),
        ("trained by", version.trained_by),
        ("registered", f"{version.registered_by} at {version.registered_at}"),
        ("advisories", _advisories_line(version.vulnerability_check)),
    ):
        out.print(f"  {label:12} {value}")
    if version.status_reason:
        out.print(f"  {'reason':12} {version.status_reason}")


@app.command("import")
def import_command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Model file (.skops, .safetensors, .pkl, .joblib)."),
    source: str = typer.Option(..., "--source", help="Where the file came from (URL)."),
    name: str | None = typer.Option(None, "--name", help="Artifact name (default: file name)."),
    as_json: bool = JsonOption,
) -> None:
    """Scan a third-party model and seal it with its source and digest; refuse unsafe files."""
    with open_workspace(ctx) as workspace:
        artifact = workspace.import_model(path, source, name)
    if as_json:
        print_json({"artifact": artifact, "file": str(path), "source": source})
    else:
        out.print(f"imported {path.name} as artifact {artifact}")


def _signature_for(path: Path, signature: Path | None) -> Path:
    return signature or path.with_name(path.name + ".sig")


@app.command("sign")
def sign_command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Model file or folder."),
    signature: Path | None = typer.Option(None, "--signature", help="Default: PATH.sig."),
    key: Path | None = typer.Option(
        None, "--key", help="EC private key (PEM) instead of your principal key."
    ),
) -> None:
    """Sign a model in the OpenSSF model signing format (verifiable by `model_signing`)."""
    target = _signature_for(path, signature)
    if key is not None:
        manifest = openssf.sign_model(path, openssf.load_private_key(key), target)
    else:
        with open_workspace(ctx) as workspace:
            manifest = workspace.sign_path(path, target)
    out.print(f"signed {len(manifest.resources)} files; signature written to {target}")


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Model file or folder."),
    signature: Path | None = typer.Option(None, "--signature", help="Default: PATH.sig."),
    key: Path | None = typer.Option(
        None, "--key", help="Signer's public key (PEM); default: the workspace principal named."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Verify a signed model: any changed, added or removed file fails (exit 1)."""
    target = _signature_for(path, signature)
    if not target.is_file():
        raise UsageError(f"signature {target} not found")
    if key is not None:
        manifest = openssf.verify_model(path, target, openssf.load_public_key(key))
        signer = key.name
    else:
        with open_workspace(ctx) as workspace:
            manifest, signer = workspace.verify_path(path, target)
    if as_json:
        print_json({"verified": True, "files": len(manifest.resources), "signer": signer})
    else:
        out.print(f"verified {len(manifest.resources)} files, signed by {signer}")


@app.command("register")
def register_command(
    ctx: typer.Context,
    artifact: str = typer.Argument(..., help="Model artifact id or name."),
    name: str = typer.Option(..., "--name", help="Registered model name."),
    evaluation: str | None = typer.Option(
        None, "--evaluation", help="Evaluation report (default: the newest made from the model)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Register a sealed model as the next immutable, signed version of NAME."""
    with open_workspace(ctx) as workspace:
        version = workspace.register_model(artifact, name, evaluation=evaluation)
    _show_version(version, as_json)


@app.command("approve")
def approve_command(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    version: int = typer.Argument(..., min=1),
    alias: str = typer.Option("production", "--alias"),
    code: str = CodeOption,
    as_json: bool = JsonOption,
) -> None:
    """Approve VERSION for ALIAS as a second principal, confirmed with a TOTP code."""
    with open_workspace(ctx) as workspace:
        approval = workspace.approve_model(name, version, alias, code)
    if as_json:
        print_json({"approval": approval, "model": name, "version": version, "alias": alias})
    else:
        out.print(f"approved {name} v{version} for {alias} (approval {approval})")


@app.command("promote")
def promote_command(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    version: int = typer.Argument(..., min=1),
    alias: str = typer.Option("production", "--alias"),
    as_json: bool = JsonOption,
) -> None:
    """Point ALIAS at VERSION after its gates pass (and an approval, where required)."""
    with open_workspace(ctx) as workspace:
        result = workspace.promote_model(name, version, alias)
    _show_version(result, as_json)


@app.command("gate")
def gate_command(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME@VERSION (or NAME VERSION)."),
    version: int | None = typer.Argument(None, min=1),
    alias: str = typer.Option("production", "--alias"),
    as_json: bool = JsonOption,
) -> None:
    """Evaluate the gates between a version and ALIAS. Exit 1 if any fails.

    Each requirement is shown with the measured value next to it; promotion runs the same
    checks."""
    name, selector = _split(ref)
    if version is None:
        if selector is None or not selector.lstrip("v").isdigit():
            raise UsageError("give the version: NAME@VERSION or NAME VERSION")
        version = int(selector.lstrip("v"))
    with open_workspace(ctx) as workspace:
        checks = workspace.gate_report(name, version, alias)
    passed = all(check.passed for check in checks)
    if as_json:
        print_json({"passed": passed, "checks": [c.to_dict() for c in checks]})
    else:
        table = Table("check", "requirement", "measured", "result")
        for check in checks:
            result = styled(("pass", "green") if check.passed else ("fail", "bold red"))
            table.add_row(check.check, check.requirement, check.measured, result)
        print_table(table)
        verdict = "may" if passed else "may not"
        out.print(f"{name} v{version} {verdict} become {alias}")
    if not passed:
        raise typer.Exit(1)


@app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    alias: str = typer.Option("production", "--alias"),
    as_json: bool = JsonOption,
) -> None:
    """Move ALIAS back to the version it pointed at before its last promotion."""
    with open_workspace(ctx) as workspace:
        result = workspace.rollback_model(name, alias)
    _show_version(result, as_json)


def _set_status(
    ctx: typer.Context, name: str, version: int, status: str, reason: str, as_json: bool
) -> None:
    with open_workspace(ctx) as workspace:
        result = workspace.set_model_status(name, version, status, reason)
    _show_version(result, as_json)


@app.command("revoke")
def revoke_command(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    version: int = typer.Argument(..., min=1),
    reason: str = typer.Option(..., "--reason"),
    as_json: bool = JsonOption,
) -> None:
    """Revoke VERSION for good: it can never be loaded or served again."""
    _set_status(ctx, name, version, "revoked", reason, as_json)


@app.command("deprecate")
def deprecate_command(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    version: int = typer.Argument(..., min=1),
    reason: str = typer.Option(..., "--reason"),
    as_json: bool = JsonOption,
) -> None:
    """Deprecate VERSION: it is no longer served (a later revocation is still possible)."""
    _set_status(ctx, name, version, "deprecated", reason, as_json)


@app.command("ls")
def ls_command(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="List every version of this model."),
    as_json: bool = JsonOption,
) -> None:
    """Registered models (latest version of each), or every version of NAME."""
    with open_workspace(ctx) as workspace:
        versions = workspace.versions(name) if name else workspace.models()
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    table = Table("name", "version", "status", "aliases", "trained by", "registered")
    for v in versions:
        table.add_row(
            v.name, str(v.version), v.status, ", ".join(v.aliases), v.trained_by, v.registered_at
        )
    print_table(table)


@app.command("show")
def show_command(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME@VERSION."),
    as_json: bool = JsonOption,
) -> None:
    """One version with its signature, scan, provenance and evaluation, checked."""
    name, selector = _split(ref)
    with open_workspace(ctx) as workspace:
        version = workspace.show_model(name, _selector_or_latest(workspace, name, selector))
    _show_version(version, as_json)


@app.command("history")
def history_command(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    as_json: bool = JsonOption,
) -> None:
    """Every registry event of NAME (registrations, approvals, moves, refusals)."""
    with open_workspace(ctx) as workspace:
        events = workspace.history(name)
    if as_json:
        print_json(events)
        return
    table = Table("seq", "time", "principal", "action", "outcome", "version", "alias")
    for event in events:
        details = event.get("details", {})
        table.add_row(
            str(event["seq"]),
            str(event.get("ts", "")),
            str(event.get("principal", "")),
            str(event.get("action", "")),
            str(event.get("outcome", "")),
            str(details.get("version", "")),
            str(details.get("alias", "")),
        )
    print_table(table)


@app.command("sbom")
def sbom_command(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME@VERSION."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="A new file for it (default: standard output)."
    ),
) -> None:
    """The version's CycloneDX SBOM: the packages its model was built with, checked."""
    name, selector = _split(ref)
    with open_workspace(ctx) as workspace:
        document = workspace.model_sbom(name, _selector_or_latest(workspace, name, selector))
    write_or_print(document.decode(), output, replace=False)
    if output is not None:
        out.print(f"wrote {output}")


@app.command("vulnerabilities")
def vulnerabilities_command(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME@VERSION (default: the newest)."),
    advisories: Path = typer.Option(
        ...,
        "--advisories",
        help="An offline copy of the OSV database: PyPI's all.zip, or a folder of records.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check the packages a version was built with against known advisories. Exit 1 if any.

    Reads the version's verified SBOM and an OSV copy (nothing is fetched); the check and
    the copy's digest go to the ledger."""
    from ..provenance.advisories import AdvisoryDatabase

    name, selector = _split(ref)
    database = AdvisoryDatabase.load(advisories)
    with open_workspace(ctx) as workspace:
        selected = _selector_or_latest(workspace, name, selector)
        found = workspace.model_vulnerabilities(name, selected, database)
    if as_json:
        print_json(
            {
                "model": name,
                "version": selected,
                "advisories": {"source": database.source, "sha256": database.sha256},
                "findings": [f.to_dict() for f in found],
            }
        )
    elif not found:
        out.print(
            f"no known vulnerability in the packages of {name}@{selected} "
            f"({database.records} advisories, sha256 {database.sha256[:16]})"
        )
    else:
        table = Table("package", "version", "advisory", "aliases", "fixed in", "summary", box=None)
        for finding in found:
            table.add_row(
                finding.package,
                finding.version,
                finding.advisory,
                ", ".join(finding.aliases),
                ", ".join(finding.fixed) or "-",
                finding.summary if finding.evaluated else "(range not PEP 440; assumed affected)",
            )
        print_table(table)
    if found:
        raise typer.Exit(1)


@app.command("watermark-verify")
def watermark_verify_command(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME@VERSION whose watermark to test."),
    url: str | None = typer.Option(
        None, "--url", help="Query this prediction endpoint instead of the registered model."
    ),
    token_env: str | None = typer.Option(
        None, "--token-env", help="Environment variable holding a bearer token for --url."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Test a model against the secret trigger set. Exit 1 unless the watermark is found.

    Found means a match rate with p < 1e-6 against chance."""
    import os

    name, selector = _split(ref)
    token = os.environ.get(token_env) if token_env else None
    if token_env and token is None:
        raise UsageError(f"environment variable {token_env} is not set")
    with open_workspace(ctx) as workspace:
        report = workspace.watermark_verify(name, selector or "production", url=url, token=token)
    found = report.p_value < WATERMARK_P_VALUE
    if as_json:
        print_json({**report.to_dict(), "found": found})
    else:
        verdict = ("watermark found", "green") if found else ("no watermark", "yellow")
        out.print(
            styled(
                verdict,
                f": {report.matches}/{report.count} triggers match (rate "
                f"{report.match_rate:.2f}, chance {report.chance:.2f}, p = {report.p_value:.2e})",
            )
        )
    if not found:
        raise typer.Exit(1)


@app.command("card")
def card_command(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME@VERSION."),
    output: Path = typer.Option(Path(), "-o", "--output", help="Folder for the card files."),
) -> None:
    """Write the model card, Markdown and self-contained HTML with plots.

    Made from verified records: sources, provenance, parameters, metrics, fairness,
    robustness, privacy, gates."""
    from ..governance import modelcard

    name, selector = _split(ref)
    if not output.is_dir():
        raise UsageError(f"{output} is not a folder")
    with open_workspace(ctx) as workspace:
        facts = workspace.model_card(name, _selector_or_latest(workspace, name, selector))
    stem = f"{name}-v{facts.version['version']}-card"
    (output / f"{stem}.md").write_text(modelcard.markdown(facts), encoding="utf-8")
    (output / f"{stem}.html").write_text(modelcard.to_html(facts), encoding="utf-8")
    out.print(f"wrote {output / stem}.md and .html")
