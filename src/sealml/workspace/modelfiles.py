"""Model files outside the registry: scanning sealed artifacts, importing third-party
files, and signing or verifying files and folders on disk (OpenSSF model signing)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..db.models import ArtifactRow
from ..errors import IntegrityError, UsageError
from ..models import openssf
from ..models.formats import check_model_file, media_type_for
from ..models.manifest import Manifest, file_sha256, hash_model
from ..models.registry import SCAN_REPORT
from ..models.scanner import ScanResult, scan_bytes, scan_path
from ..store.artifacts import ArtifactDraft, SealedArtifact
from .data import DataOperations

MAX_IMPORT = 4 << 30


class ModelFileOperations(DataOperations):
    """``sealml scan --artifact``, ``sealml model import|sign|verify``."""

    # -- scanning and import --------------------------------------------------------------

    def scan_artifact(self, ref: str) -> tuple[ScanResult, str]:
        """Scan a sealed model artifact and record the report; returns it and its id."""
        info = self.info(ref)
        self.authorize("report:write", f"artifact:{info.id}", action="model.scan")
        data = self.read_bytes(info.id)
        result = scan_bytes(data, info.name)
        with self.transaction() as session:
            row = self._find(session, info.id)
            report = self._seal_scan_report(row, result)
            self.commit_sealed(session, report)
            self.append(
                session,
                [self.event("model.scan", f"artifact:{info.id}", verdict=result.verdict)],
            )
        return result, report.artifact.id

    def _seal_scan_report(self, row: ArtifactRow, result: ScanResult) -> SealedArtifact:
        body = json.dumps(result.to_dict(), sort_keys=True).encode()
        draft = ArtifactDraft(
            "report",
            f"{row.name}.scan.json",
            "application/json",
            (row.id,),
            {"report": SCAN_REPORT, "verdict": result.verdict},
        )
        return self.seal_draft(io.BytesIO(body), draft)

    def import_model(self, path: Path, source: str, name: str | None = None) -> str:
        """Scan a third-party model file and seal it with its source and SHA-256 recorded;
        refuses anything short of a clean scan. Returns the artifact id."""
        if not path.is_file():
            raise UsageError(f"{path} is not a file (folders are imported file by file)")
        if path.stat().st_size > MAX_IMPORT:
            raise UsageError(f"{path} is larger than {MAX_IMPORT >> 30} GiB")
        if not source.strip() or len(source) > 2048 or any(ord(c) < 32 for c in source):
            raise UsageError("--source must be a URL or description of where the model came from")
        name = name or path.name
        media_type = media_type_for(path.name)
        self.authorize("model:write", f"model:{name}", action="model.import")
        check_model_file(path, media_type)  # a .skops or .safetensors that is not one
        result = scan_path(path)
        sha256 = file_sha256(path)
        if result.verdict != "safe":
            self.record(
                [
                    self.event(
                        "model.import",
                        f"model:{name}",
                        "denied",
                        source=source,
                        sha256=sha256,
                        verdict=result.verdict,
                    )
                ]
            )
            worst = result.worst
            assert worst is not None
            raise IntegrityError(
                f"{path.name} is {result.verdict}: {worst.detail} at {worst.location}; not imported"
            )
        info = self.put(
            path,
            "model",
            name,
            media_type=media_type,
            annotations={"source": source, "sha256": sha256, "scan": result.verdict},
        )
        with self.transaction() as session:
            report = self._seal_scan_report(self._find(session, info.id), result)
            self.commit_sealed(session, report)
            self.append(
                session,
                [self.event("model.import", f"artifact:{info.id}", source=source, sha256=sha256)],
            )
        return info.id

    # -- signing files on disk ------------------------------------------------------------

    def sign_path(self, model: Path, signature: Path) -> Manifest:
        """Sign a model file or folder on disk with the acting principal's key (OpenSSF
        model signing format)."""
        actor = self.authorize("registry:register", f"file:{model.name}", action="model.sign")
        manifest = openssf.sign_model(model, actor.signing_key, signature)
        self.record([self.event("model.sign", f"file:{model.name}", root=manifest.root_digest)])
        return manifest

    def verify_path(self, model: Path, signature: Path) -> tuple[Manifest, str]:
        """Verify a signed file or folder against the workspace principal whose key the
        bundle names; returns the manifest and the signer's name."""
        self.authorize("artifact:verify", f"file:{model.name}", action="model.verify")
        bundle = openssf.parse_bundle(_read_small(signature))
        with self.db.read() as session:
            candidates = self.principals.all(session)
        signers = [p for p in candidates if any(openssf.key_hint(k) == bundle.hint for k in p.keys)]
        if not signers:
            raise IntegrityError("the signature names no key of this workspace; give --key")
        key = openssf.hinted_key(bundle, signers[0].keys)
        if any(key == bad for bad, _ in signers[0].compromised):
            raise IntegrityError(
                f"the signature is by a key of {signers[0].name} reported compromised; a "
                "signature outside the workspace carries no trusted time, so it proves nothing"
            )
        signed = openssf.signed_manifest(bundle, key)
        actual = hash_model(model, ignore=signed.ignore_paths, signature=signature)
        openssf.compare(signed, actual)
        return signed, signers[0].name


def _read_small(path: Path) -> bytes:
    try:
        if path.stat().st_size > openssf.MAX_BUNDLE:
            raise IntegrityError(f"{path} is too large to be a model signature")
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror}") from None
