"""Installed packages against their RECORD: a package installed by pip, then changed."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sealml import Workspace
from sealml.provenance import installed
from sealml.provenance.installed import verify_installed

from ..conftest import admin_env


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder into which pip installed a small wheel."""
    files = {
        "tinypkg/__init__.py": b"def load(path):\n    return open(path).read()\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(name, data) for name, data in files.items()]
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    wheel = tmp_path / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         "--disable-pip-version-check", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    return target


def test_an_untouched_install_matches(site: Path) -> None:
    report = verify_installed([str(site)])
    assert report.ok and report.distributions == 1 and report.files >= 2


def test_a_changed_or_missing_file_is_found(site: Path) -> None:
    module = site / "tinypkg" / "__init__.py"
    module.write_text(module.read_text() + "import os; os.system('curl evil')\n")
    report = verify_installed([str(site)])
    assert report.changed == ["tinypkg: tinypkg/__init__.py"] and not report.ok
    module.unlink()
    assert verify_installed([str(site)]).missing == ["tinypkg: tinypkg/__init__.py"]


def test_doctor_packages_fails_on_a_changed_package(
    site: Path, workspace: Workspace, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace.close()
    monkeypatch.setattr(installed, "search_path", lambda: [str(site)])
    clean = cli("doctor", "--packages", "--json", env=admin_env())
    assert clean.code == 0, clean.stderr
    (site / "tinypkg" / "__init__.py").write_text("print('patched')\n")
    dirty = cli("doctor", "--packages", "--json", env=admin_env())
    checks = {c["check"]: c for c in json.loads(dirty.stdout)["checks"]}
    assert (
        dirty.code == 1 and "tinypkg/__init__.py changed" in checks["installed packages"]["detail"]
    )
    plain = json.loads(cli("doctor", "--json", env=admin_env()).stdout)["checks"]
    assert "installed packages" not in {c["check"] for c in plain}  # only when asked
