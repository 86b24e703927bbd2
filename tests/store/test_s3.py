"""The S3-compatible blob store: the same contract as local files, over real S3 HTTP calls,
and a workspace whose sealed blobs live in a bucket refuses every altered object."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealml import Secret, Workspace
from sealml.config import load_config
from sealml.crypto.kdf import FAST_PARAMS
from sealml.errors import ConfigError, IntegrityError, UsageError
from sealml.store.artifacts import live_artifacts
from sealml.store.blobs import BlobStore, LocalBlobStore
from sealml.store.s3 import S3BlobStore, S3Location
from sealml.workspace.backup import create_backup

from ..conftest import ADMIN_PASSWORD, PASSPHRASE, admin_env, reopen
from .conftest import s3_client

MIB = 1 << 20


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore.initialise(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_env")
    bucket = request.getfixturevalue("bucket")
    return S3BlobStore.initialise(S3Location(bucket, "team/", endpoint_url=endpoint))


def write(store: BlobStore, data: bytes, chunk: int = 64 * 1024) -> str:
    with store.writer() as writer:
        view = memoryview(data)
        for start in range(0, len(data), chunk):
            writer.write(view[start : start + chunk])
        writer.commit()
    return writer.name


def read(store: BlobStore, name: str) -> bytes:
    with store.open(name) as source:
        return source.read()


def test_the_blob_contract(store: BlobStore) -> None:
    data = os.urandom(300_000)
    name = write(store, data)
    assert read(store, name) == data
    assert store.size(name) == len(data)
    assert store.exists(name)
    assert list(store.listing()) == [(name, len(data))]
    store.delete(name)
    assert not store.exists(name)
    assert list(store.listing()) == []
    with pytest.raises(IntegrityError, match="missing"):
        store.open(name)
    with pytest.raises(IntegrityError, match="missing"):
        store.size(name)


def test_an_uncommitted_blob_never_appears(store: BlobStore) -> None:
    with store.writer() as writer:
        writer.write(memoryview(b"half a blob"))
    assert not store.exists(writer.name)
    assert list(store.listing()) == []
    assert store.stale_partials(0) == 0


@pytest.mark.parametrize("name", ["../../etc/passwd", "a" * 31, "A" * 32, "0" * 31 + "/"])
def test_names_that_are_not_blob_names_are_refused(store: BlobStore, name: str) -> None:
    for operation in (store.open, store.size, store.delete, store.exists):
        with pytest.raises(UsageError, match="malformed blob name"):
            operation(name)


def test_a_large_blob_goes_up_in_parts(s3_env: str, bucket: str) -> None:
    store = S3BlobStore(S3Location(bucket, endpoint_url=s3_env), part_size=5 * MIB)
    data = os.urandom(26 * MIB + 12345)  # five full parts (more than are ever in flight)
    name = write(store, data, chunk=MIB)
    assert read(store, name) == data
    assert store.size(name) == len(data)
    parts = s3_client(s3_env).head_object(Bucket=bucket, Key=name, PartNumber=1)
    assert parts["PartsCount"] == 6


def test_an_abandoned_multipart_upload_is_aborted(s3_env: str, bucket: str) -> None:
    store = S3BlobStore(S3Location(bucket, endpoint_url=s3_env), part_size=5 * MIB)
    client = s3_client(s3_env)
    with pytest.raises(RuntimeError), store.writer() as writer:
        writer.write(memoryview(os.urandom(6 * MIB)))  # one part sent
        raise RuntimeError("the sealing failed half way")
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert not store.exists(writer.name)


def test_stale_uploads_are_counted_and_discarded(s3_env: str, bucket: str) -> None:
    store = S3BlobStore(S3Location(bucket, "team/", endpoint_url=s3_env))
    client = s3_client(s3_env)
    client.create_multipart_upload(Bucket=bucket, Key="team/" + "ab" * 16)
    client.create_multipart_upload(Bucket=bucket, Key="other-team/" + "cd" * 16)
    # (moto reports a fixed initiation time, so only the prefix filter is tested here)
    assert store.stale_partials(0) == 1  # only under its own prefix
    assert store.discard_partial(0) == 1
    assert store.stale_partials(0) == 0
    assert len(client.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 1


def test_a_prefix_already_in_use_is_refused(s3_env: str, bucket: str) -> None:
    s3_client(s3_env).put_object(Bucket=bucket, Key="team/something", Body=b"x")
    with pytest.raises(UsageError, match="prefix of its own"):
        S3BlobStore.initialise(S3Location(bucket, "team/", endpoint_url=s3_env))
    S3BlobStore.initialise(S3Location(bucket, "other/", endpoint_url=s3_env))


def test_a_missing_bucket_is_a_config_error(s3_env: str) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        S3BlobStore.initialise(S3Location("no-such-bucket", endpoint_url=s3_env))


def test_missing_credentials_are_a_config_error(s3_env: str, bucket: str, monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="no S3 credentials"):
        S3BlobStore(S3Location(bucket, endpoint_url=s3_env)).exists("ab" * 16)


def test_without_boto3_a_bucket_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for module in ("boto3", "botocore", "botocore.exceptions", "botocore.config"):
        monkeypatch.setitem(sys.modules, module, None)  # makes importing it fail
    store = S3BlobStore(S3Location("ok-bucket", endpoint_url="http://127.0.0.1:9"))
    for operation in (store.exists, store.open):
        with pytest.raises(ConfigError, match=r"needs boto3: pip install 'sealml\[s3\]'"):
            operation("ab" * 16)


def test_an_unreachable_service_is_one_clear_error(s3_env: str) -> None:
    store = S3BlobStore(S3Location("bucket", endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(UsageError, match="unavailable: EndpointConnectionError") as caught:
        store.size("ab" * 16)
    assert "\n" not in str(caught.value)
    assert "test-secret-key" not in str(caught.value)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ({"bucket": "Not_A_Bucket"}, "not a valid S3 bucket name"),
        ({"bucket": "ok-bucket", "prefix": "/abs/"}, "relative"),
        ({"bucket": "ok-bucket", "prefix": "a/../b/"}, "non-empty parts"),
        ({"bucket": "ok-bucket", "prefix": "no-slash"}, "end with '/'"),
        ({"bucket": "ok-bucket", "endpoint_url": "http://minio.example.com"}, "https"),
        ({"bucket": "ok-bucket", "endpoint_url": "ftp://127.0.0.1"}, "https"),
        (
            {"bucket": "ok-bucket", "endpoint_url": "https://key:secret@s3.example.com"},
            "credentials",
        ),
    ],
)
def test_bad_locations_are_refused(location: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        S3Location(**location)
    assert "secret" not in str(caught.value).replace("credentials", "")


def test_a_loopback_endpoint_may_use_http() -> None:
    for host in ("127.0.0.1", "localhost", "[::1]"):
        S3Location("ok-bucket", endpoint_url=f"http://{host}:9000")


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [("s3://b-1", "b-1", ""), ("s3://b-1/team", "b-1", "team/"), ("s3://b-1/a/b/", "b-1", "a/b/")],
)
def test_s3_urls(url: str, bucket: str, prefix: str) -> None:
    location = S3Location.from_url(url)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert str(location) == f"s3://{bucket}/{prefix}"


@pytest.mark.parametrize("url", ["https://b-1/x", "s3:///x", "s3://b-1/x?versionId=1", "b-1"])
def test_urls_that_are_not_s3_urls(url: str) -> None:
    with pytest.raises(UsageError, match="not an s3://"):
        S3Location.from_url(url)


# -- a workspace on S3 -------------------------------------------------------------------


@pytest.fixture
def s3_workspace(tmp_path: Path, s3_env: str, bucket: str) -> Iterator[Workspace]:
    ws = Workspace.init(
        tmp_path / "ws",
        passphrase=Secret(PASSPHRASE),
        admin_password=Secret(ADMIN_PASSWORD),
        kdf=FAST_PARAMS,
        bucket=S3Location(bucket, endpoint_url=s3_env),
    )
    yield ws
    ws.close()


def only_object(ws: Workspace) -> tuple[Any, str, str]:
    location = ws.config.blobs.s3_location()
    client = s3_client(str(location.endpoint_url))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=location.bucket)["Contents"]]
    assert len(keys) == 1
    return client, location.bucket, keys[0]


def test_a_workspace_keeps_its_sealed_blobs_in_the_bucket(
    s3_workspace: Workspace, tmp_path: Path
) -> None:
    plaintext = b"name,salary\nalice,91000\n" * 2000
    source = tmp_path / "payroll.csv"
    source.write_bytes(plaintext)
    info = s3_workspace.put(source, kind="dataset")
    config = load_config(s3_workspace.root / "sealml.toml")
    assert config.blobs.backend == "s3"
    assert config.blobs.prefix == f"sealml/{config.workspace.id}/"
    assert not (s3_workspace.root / ".sealml" / "blobs").exists()
    client, bucket, key = only_object(s3_workspace)
    assert key.startswith(config.blobs.prefix)
    stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert b"alice" not in stored and len(stored) > len(plaintext)
    s3_workspace.get(info.id, tmp_path / "back.csv")
    assert (tmp_path / "back.csv").read_bytes() == plaintext
    assert s3_workspace.verify_store().ok


@pytest.mark.parametrize("where", ["header", "middle", "end"])
def test_an_altered_object_is_refused(s3_workspace: Workspace, tmp_path: Path, where: str) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(200_000))
    info = s3_workspace.put(source, kind="dataset")
    client, bucket, key = only_object(s3_workspace)
    stored = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    offset = {"header": 5, "middle": len(stored) // 2, "end": len(stored) - 1}[where]
    stored[offset] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(stored))
    out = tmp_path / "out.bin"
    with pytest.raises(IntegrityError):
        s3_workspace.get(info.id, out)
    assert not out.exists()
    assert not s3_workspace.verify_store().ok


def test_a_cut_or_deleted_object_is_refused(s3_workspace: Workspace, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(200_000))
    info = s3_workspace.put(source, kind="dataset")
    client, bucket, key = only_object(s3_workspace)
    stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=stored[:-100])
    with pytest.raises(IntegrityError):
        s3_workspace.verify(info.id)
    client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(IntegrityError, match="missing from the store"):
        s3_workspace.get(info.id, tmp_path / "out.bin")


PIPELINE = """
from pathlib import Path
from sealml.pipeline import Pipeline, Source, stage


@stage(inputs={"raw": "file"}, outputs={"numbers": "report"})
def parse(raw):
    return {"numbers": {"values": [int(x) for x in raw.split()]}}


@stage(inputs={"numbers": "report"}, outputs={"total": "report"})
def total(numbers):
    return {"total": {"sum": sum(numbers["values"])}}


pipeline = Pipeline("numbers", stages=[parse, total], sources={"raw": Source(Path("n.txt"))})
"""


@pytest.mark.parametrize("executor", ["local", "sandbox"])
def test_a_pipeline_seals_its_outputs_into_the_bucket(
    s3_workspace: Workspace, tmp_path: Path, executor: str
) -> None:
    """Stages (in a sandbox without network, too) hand their outputs to the process that
    seals them into the bucket."""
    from sealml.pipeline.loader import load_pipeline

    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "n.txt").write_text("1 2 3 4\n")
    (folder / "numbers_pipeline.py").write_text(PIPELINE)
    pipeline = load_pipeline(folder / "numbers_pipeline.py")
    report = s3_workspace.run_pipeline(pipeline, executor, {})
    assert {s.status for s in report.stages} == {"executed"}
    with s3_workspace.db.read() as session:
        sealed = {row.blob_name for row in live_artifacts(session)}
    assert len(sealed) >= 3  # the source, two stage outputs, the run's own records
    assert {name for name, _ in s3_workspace.blobs.listing()} == sealed
    assert s3_workspace.verify_store().ok


@pytest.mark.parametrize("versioned", [True, False])
def test_shredding_removes_every_version_of_the_object(
    s3_workspace: Workspace, tmp_path: Path, versioned: bool
) -> None:
    location = s3_workspace.config.blobs.s3_location()
    client = s3_client(str(location.endpoint_url))
    if versioned:
        client.put_bucket_versioning(
            Bucket=location.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    (tmp_path / "a.csv").write_text("name,diagnosis\nalice,flu\n")
    info = s3_workspace.put(tmp_path / "a.csv", kind="dataset")
    _, bucket, key = only_object(s3_workspace)
    stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=stored)  # a second version, if kept
    client.delete_object(Bucket=bucket, Key=key)  # and a delete marker
    client.put_object(Bucket=bucket, Key=key, Body=stored)
    kept = client.list_object_versions(Bucket=bucket, Prefix=key)
    assert len(kept.get("Versions", [])) == (3 if versioned else 1)
    s3_workspace.shred(info.id, "erasure request")
    left = client.list_object_versions(Bucket=bucket, Prefix=key)
    assert not left.get("Versions") and not left.get("DeleteMarkers")
    assert not s3_workspace.blobs.exists(key[len(location.prefix) :])


def test_drills_refuse_a_workspace_on_s3(s3_workspace: Workspace) -> None:
    """A drill alters a copy of the folder; the copy would share the live bucket."""
    with pytest.raises(UsageError, match=r"copy of the workspace folder.*s3://"):
        s3_workspace.drill("tampered-model", "credit")


def test_a_backup_takes_the_blobs_out_of_the_bucket(
    s3_workspace: Workspace, tmp_path: Path
) -> None:
    from sealml.workspace.backup import restore_backup

    first = os.urandom(300_000)
    (tmp_path / "a.bin").write_bytes(first)
    (tmp_path / "b.csv").write_text("x,y\n1,2\n")
    a = s3_workspace.put(tmp_path / "a.bin", kind="dataset")
    b = s3_workspace.put(tmp_path / "b.csv", kind="dataset")
    made = create_backup(s3_workspace, tmp_path / "ws.backup", Secret(PASSPHRASE))
    assert made.artifacts == 2
    location = s3_workspace.config.blobs.s3_location()
    client, bucket = s3_client(str(location.endpoint_url)), location.bucket
    before = client.list_objects_v2(Bucket=bucket)["KeyCount"]

    restored = restore_backup(tmp_path / "ws.backup", tmp_path / "copy", Secret(PASSPHRASE))
    config = load_config(restored.root / "sealml.toml")
    assert config.blobs.backend == "local" and config.blobs.bucket is None
    with reopen(restored.root) as copy:
        assert isinstance(copy.blobs, LocalBlobStore)
        copy.get(a.id, tmp_path / "a.out")
        assert (tmp_path / "a.out").read_bytes() == first
        copy.get(b.id, tmp_path / "b.out")
        assert copy.verify_store().ok
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == before  # bucket untouched


def test_a_backup_refuses_an_altered_object(s3_workspace: Workspace, tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(os.urandom(50_000))
    s3_workspace.put(tmp_path / "a.bin", kind="dataset")
    client, bucket, key = only_object(s3_workspace)
    stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=stored[:-1])
    with pytest.raises(IntegrityError, match="wrong size"):
        create_backup(s3_workspace, tmp_path / "ws.backup", Secret(PASSPHRASE))
    assert not (tmp_path / "ws.backup").exists()
    client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(IntegrityError, match="missing"):
        create_backup(s3_workspace, tmp_path / "ws.backup", Secret(PASSPHRASE))
    assert not (tmp_path / "ws.backup").exists()


def test_init_on_a_used_prefix_leaves_nothing_behind(
    tmp_path: Path, s3_env: str, bucket: str
) -> None:
    s3_client(s3_env).put_object(Bucket=bucket, Key="shared/other", Body=b"x")
    with pytest.raises(UsageError, match="prefix of its own"):
        Workspace.init(
            tmp_path / "ws",
            passphrase=Secret(PASSPHRASE),
            admin_password=Secret(ADMIN_PASSWORD),
            kdf=FAST_PARAMS,
            bucket=S3Location(bucket, "shared/", endpoint_url=s3_env),
        )
    assert not (tmp_path / "ws" / "sealml.toml").exists()
    assert not (tmp_path / "ws" / ".sealml").exists()


def test_config_refuses_s3_settings_it_cannot_use(workspace: Workspace) -> None:
    import tomllib

    import tomli_w

    path = workspace.root / "sealml.toml"
    original = tomllib.loads(path.read_text())
    s3 = {"backend": "s3", "bucket": "ok-bucket"}
    cases: list[tuple[dict[str, str], str]] = [
        ({"backend": "s3"}, "needs blobs.bucket"),
        ({**s3, "endpoint_url": "http://s3.example.com"}, "https"),
        ({**s3, "aws_secret_access_key": "x"}, "Extra inputs"),
        ({"backend": "gcs"}, "blobs.backend"),
    ]
    for blobs, message in cases:
        path.write_text(tomli_w.dumps({**original, "blobs": blobs}))
        with pytest.raises(ConfigError, match=message) as caught:
            load_config(path)
        assert str(path) in str(caught.value)


def test_cli_init_on_s3_and_doctor(cli: Any, s3_env: str, bucket: str, tmp_path: Path) -> None:
    result = cli(  # type: ignore[operator]
        "init", "--blob-store", f"s3://{bucket}/team-a", "--s3-endpoint", s3_env,
        "--insecure-fast-kdf", env=admin_env(),
    )  # fmt: skip
    assert result.code == 0, result.stderr
    client = s3_client(s3_env)
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0

    def doctor() -> tuple[int, dict[str, dict[str, str]]]:
        answer = cli("doctor", "--json", env=admin_env())  # type: ignore[operator]
        checks = {c["check"]: c for c in json.loads(answer.stdout)["checks"]}
        return answer.code, checks

    code, checks = doctor()
    assert code == 0
    assert checks["blob bucket"]["status"] == "warn"
    assert "versioning" in checks["blob bucket"]["detail"]
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    (tmp_path / "rows.csv").write_text("age,income\n41,52000\n")
    put = cli("put", str(tmp_path / "rows.csv"), "--kind", "dataset", env=admin_env())  # type: ignore[operator]
    assert put.code == 0, put.stderr
    code, checks = doctor()
    assert (code, checks["blob bucket"]["status"]) == (0, "ok")
    assert checks["sealed blobs"]["detail"].startswith("1 present")
    (key,) = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert key.startswith("team-a/")
    client.delete_object(Bucket=bucket, Key=key)
    code, checks = doctor()
    assert code == 1
    assert checks["sealed blobs"]["status"] == "fail"
    assert "missing" in checks["sealed blobs"]["detail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--blob-store", "https://bucket/x"], "not an s3://"),
        (["--blob-store", "s3://ok-bucket", "--s3-endpoint", "http://s3.example.com"], "https"),
        (["--s3-region", "eu-west-1"], "need --blob-store"),
    ],
)
def test_cli_init_refuses_bad_s3_options(cli: Any, args: list[str], message: str) -> None:
    result = cli("init", *args, "--insecure-fast-kdf", env=admin_env())  # type: ignore[operator]
    assert result.code == 2
    output = result.stdout + result.stderr
    assert message in output
    assert "Traceback" not in output
    assert len(result.stderr.strip().splitlines()) == 1
