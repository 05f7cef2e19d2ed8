"""The object layer under checkpoints and bundles: key rules, store URLs, atomic files and directories,
and one contract for the local and the S3 store (moto's server, real HTTP)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from outlast.runtime import objects
from outlast.runtime.objects import (
    AtomicFile,
    LocalObjects,
    ObjectKind,
    S3Location,
    S3Objects,
    atomic_write,
    create_new,
    parse_store_url,
    staged_directory,
)
from tests.conftest import free_port, moto_s3

BUCKET = "outlast-objects"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


class ThingError(Exception):
    pass


class ThingMissing(ThingError):
    pass


THINGS = ObjectKind("thing", ".bin", ThingError, ThingMissing)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LocalObjects | S3Objects:
    if request.param == "local":
        return LocalObjects(THINGS, tmp_path / "store")
    client = boto3.client("s3", endpoint_url=request.getfixturevalue("s3_endpoint"), **CREDENTIALS)
    return S3Objects(THINGS, BUCKET, f"tests/{uuid.uuid4().hex}", client=client)


def stored_names(store: LocalObjects | S3Objects) -> list[str]:
    """Every name under the store's root or prefix, temp files included."""
    if isinstance(store, LocalObjects):
        return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()) \
            if store.root.exists() else []
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix).get("Contents", [])
    return sorted(o["Key"].removeprefix(store.prefix) for o in listed)


# --- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", ".", "a//b", "a/", "a b", "a\\b", ".hidden",
                                 "run/.x", "-x", "x" * 513, "ünï", "a\nb", None])
def test_invalid_keys_name_the_kind(key: str) -> None:
    with pytest.raises(ValueError, match="invalid thing key"):
        THINGS.validate(key)


def test_valid_keys_get_the_suffix() -> None:
    for key in ["run_abc/1", "A-b.c/d_e/0", "9", "x" * 512]:
        assert THINGS.name(key) == key + ".bin"


# --- URLs ------------------------------------------------------------------------------------------


def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAST_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert parse_store_url(None, "SETTING", tmp_path / "d") == tmp_path / "d"
    assert parse_store_url("", "SETTING", tmp_path / "d") == tmp_path / "d"
    assert parse_store_url(str(tmp_path / "plain"), "SETTING", tmp_path) == tmp_path / "plain"
    assert parse_store_url("~/x", "SETTING", tmp_path) == Path.home() / "x"
    assert parse_store_url(f"file://{tmp_path}/x%20y", "SETTING", tmp_path) == tmp_path / "x y"
    assert parse_store_url(f"file://localhost{tmp_path}", "SETTING", tmp_path) == tmp_path
    assert parse_store_url("s3://b/some/prefix", "SETTING", tmp_path) == S3Location("b", "/some/prefix", None)
    assert parse_store_url("s3://b", "SETTING", tmp_path) == S3Location("b", "", None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws.example")
    assert parse_store_url("s3://b/p", "SETTING", tmp_path).endpoint_url == "http://aws.example"  # type: ignore[union-attr]
    monkeypatch.setenv("OUTLAST_S3_ENDPOINT_URL", "http://ours.example")
    assert parse_store_url("s3://b/p", "SETTING", tmp_path).endpoint_url == "http://ours.example"  # type: ignore[union-attr]


@pytest.mark.parametrize(("url", "message"), [
    ("s3:///x", "SETTING 's3:///x': no bucket"),
    ("file://host/x", "file URLs need an absolute path"),
    ("ftp://host/x", "unsupported scheme 'ftp'"),
])
def test_bad_store_urls_say_which_setting(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_store_url(url, "SETTING", tmp_path)


# --- atomic files and directories ----------------------------------------------------------------


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What objects fsyncs: the paths behind the descriptors, in order."""
    calls: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(objects.os, "fsync", recording)
    return calls


def test_atomic_write_replaces_whole_and_syncs_file_then_directory(tmp_path: Path, fsynced: list[str]) -> None:
    target = tmp_path / "obj"
    target.write_bytes(b"old")
    with atomic_write(target) as out:
        out.write(b"new ")
        assert target.read_bytes() == b"old", "nothing visible before the block ends"
        out.write(b"content")
    assert target.read_bytes() == b"new content"
    assert len(fsynced) == 2 and fsynced[0].startswith(f"{tmp_path}/.obj.") and fsynced[1] == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj"]


def test_atomic_write_that_fails_keeps_the_old_content_and_no_temp_file(tmp_path: Path, fsynced: list[str]) -> None:
    target = tmp_path / "obj"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as out:
        out.write(b"half")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj"]
    assert fsynced == []


def test_atomic_write_that_need_not_last_does_not_sync(tmp_path: Path, fsynced: list[str]) -> None:
    with atomic_write(tmp_path / "obj", durable=False) as out:
        out.write(b"x")
    assert (tmp_path / "obj").read_bytes() == b"x"
    assert fsynced == []


def test_atomic_file_spans_calls_and_abandons_cleanly(tmp_path: Path) -> None:
    written = AtomicFile(tmp_path / "pack")
    for part in (b"a", b"b", b"c"):
        written.file.write(part)
    written.commit()
    written.abandon()  # harmless after the commit
    assert (tmp_path / "pack").read_bytes() == b"abc"

    dropped = AtomicFile(tmp_path / "other")
    dropped.file.write(b"x")
    dropped.abandon()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]


def test_staged_directory_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "dest"
    with staged_directory(dest) as staging:
        (staging / "a").write_text("a")
        assert not dest.exists()
        assert staging.stat().st_mode & 0o777 == 0o700
    assert (dest / "a").read_text() == "a"

    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError), staged_directory(failed) as staging:
        (staging / "a").write_text("a")
        raise RuntimeError("build failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_directory(empty) as staging:
        (staging / "b").write_text("b")
    assert [p.name for p in empty.iterdir()] == ["b"], "an empty directory is replaced"


def test_staged_directory_over_a_full_one_fails_or_keeps_it(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "theirs").write_text("first")
    with pytest.raises(OSError), staged_directory(dest) as staging:
        (staging / "ours").write_text("second")
    with staged_directory(dest, keep_existing=True) as staging:
        (staging / "ours").write_text("second")
    assert [p.name for p in dest.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"], "no staging left behind"


def test_create_new_neither_overwrites_nor_follows_links(tmp_path: Path) -> None:
    with create_new(tmp_path / "f", 0o640) as out:
        out.write(b"x")
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640 & ~_umask()
    with pytest.raises(FileExistsError):
        create_new(tmp_path / "f")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        create_new(tmp_path / "link")
    assert not (tmp_path / "elsewhere").exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- one contract for both stores ----------------------------------------------------------------


def test_files_round_trip_under_the_kinds_layout(store: LocalObjects | S3Objects, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(os.urandom(3 << 20))
    store.put("env/v1", source)
    store.put("env", source)  # a key that is a prefix of another does not clash
    assert stored_names(store) == ["env.bin", "env/v1.bin"]
    assert store.exists("env/v1") and not store.exists("env/v2")
    store.get("env/v1", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    assert store.where("env/v1").endswith("env/v1.bin")
    if isinstance(store, LocalObjects):
        assert store.describe() == f"local directory {tmp_path / 'store'}"
    else:
        assert store.describe() == f"s3://{BUCKET}/{store.prefix}" and store.prefix.endswith("/")


def test_streams_round_trip_and_a_failed_write_keeps_the_old_object(store: LocalObjects | S3Objects) -> None:
    with store.writing("k/1") as out:
        out.write(b"first")
        assert out.tell() == 5
    with pytest.raises(RuntimeError), store.writing("k/1") as out:
        out.write(b"second, cut short")
        raise RuntimeError("packing failed")
    with store.reading("k/1") as source:
        assert source.read() == b"first"
    assert stored_names(store) == ["k/1.bin"], "no temp file, no partial upload"


def test_missing_objects_and_idempotent_deletes(store: LocalObjects | S3Objects, tmp_path: Path) -> None:
    for call in (lambda: store.get("no/such", tmp_path / "dest"), lambda: store.reading("no/such").__enter__()):
        with pytest.raises(ThingMissing, match=r"no thing 'no/such' in (local directory|s3://)"):
            call()
    assert not store.exists("no/such")
    store.delete("no/such")
    with store.writing("a/b/c") as out:
        out.write(b"x")
    store.delete("a/b/c")
    store.delete("a/b/c")
    assert not store.exists("a/b/c")
    assert stored_names(store) == []


def test_invalid_keys_are_refused_before_anything_is_written(store: LocalObjects | S3Objects, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"x")
    for call in (lambda: store.put("../x", source), lambda: store.get("../x", tmp_path / "dest"),
                 lambda: store.writing("../x").__enter__(), lambda: store.reading("../x").__enter__(),
                 lambda: store.delete("../x"), lambda: store.exists("../x")):
        with pytest.raises(ValueError, match="invalid thing key"):
            call()
    assert stored_names(store) == []
    assert not (tmp_path / "dest").exists()


def test_local_delete_drops_empty_folders_but_not_the_root(tmp_path: Path) -> None:
    store = LocalObjects(THINGS, tmp_path / "store")
    for key in ("a/b/c", "a/d"):
        with store.writing(key) as out:
            out.write(b"x")
    store.delete("a/b/c")
    assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")) == ["a", "a/d.bin"]
    store.delete("a/d")
    assert store.root.is_dir() and list(store.root.iterdir()) == []


def test_s3_errors_become_the_kinds_errors(s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="S3 thing store: bucket is empty"):
        S3Objects(THINGS, "", "p", client=object())
    source = tmp_path / "source"
    source.write_bytes(b"x")
    client = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    nowhere = S3Objects(THINGS, "no-such-bucket", "p", client=client)
    assert nowhere.describe() == "s3://no-such-bucket/p/"
    with pytest.raises(ThingError, match=r"could not upload thing 'k' in s3://no-such-bucket/p/: .*NoSuchBucket") \
            as caught:
        nowhere.put("k", source)
    assert not isinstance(caught.value, ThingMissing)

    closed = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}", **CREDENTIALS,
                          config=Config(retries={"total_max_attempts": 1}, connect_timeout=2))
    unreachable = S3Objects(THINGS, BUCKET, "", client=closed)
    with pytest.raises(ThingError, match=r"could not look up thing 'k' in s3://outlast-objects/: .*connect"):
        unreachable.exists("k")


def test_the_s3_store_makes_its_own_client_from_the_environment(s3_endpoint: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")]:
        monkeypatch.setenv(name, value)
    store = S3Objects(THINGS, BUCKET, "/own/", endpoint_url=s3_endpoint, region="us-east-1")
    assert store.prefix == "own/"
    with store.writing("k") as out:
        out.write(b"through its own client")
    assert store.exists("k")
