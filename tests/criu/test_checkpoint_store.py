"""CheckpointStore: a local directory and S3 (moto's server, real HTTP), plus a real CRIU dump
stored, fetched back and restored."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import zstandard

from outlast.runtime.checkpoint import (
    CheckpointError,
    CheckpointMissing,
    CheckpointStore,
    CheckpointStoreError,
    LocalCheckpointStore,
    S3CheckpointStore,
    dump,
    open_store,
    restore,
)
from outlast.runtime.checkpoint.archive import LISTING
from outlast.runtime.settings import RuntimeSettings
from outlast.runtime.worker.pidns import spawn_in_pid_namespace
from tests.conftest import moto_s3
from tests.criu.test_criu import (
    kill,
    require_criu,
    subreaper,  # noqa: F401 - autouse: undoes the subreaper flag after each test
    ticks,
    wait_for,
)

BUCKET = "outlast-checkpoints"
MB = 1 << 20
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint

@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "local":
        return LocalCheckpointStore(tmp_path / "store")
    client = boto3.client("s3", endpoint_url=request.getfixturevalue("s3_endpoint"), **CREDENTIALS)
    # The node's page cache beside tmp_path: tests compare tmp_path's listing.
    return S3CheckpointStore(BUCKET, f"tests/{uuid.uuid4().hex}/", client=client,
                             cache_root=tmp_path.parent / f"{tmp_path.name}-s3-cache")


def raw_object(store: CheckpointStore, key: str) -> bytes:
    if isinstance(store, LocalCheckpointStore):
        return store.path(key).read_bytes()
    assert isinstance(store, S3CheckpointStore)
    return store.client.get_object(Bucket=store.bucket, Key=store.object_key(key))["Body"].read()


def plant(store: CheckpointStore, key: str, data: bytes) -> None:
    """Put bytes under `key` the way a damaged or hostile object would get there."""
    if isinstance(store, LocalCheckpointStore):
        store.path(key).parent.mkdir(parents=True, exist_ok=True)
        store.path(key).write_bytes(data)
    else:
        assert isinstance(store, S3CheckpointStore)
        store.client.put_object(Bucket=store.bucket, Key=store.object_key(key), Body=data)


def make_images(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_round_trip_compresses_and_restores_every_file(store: CheckpointStore, tmp_path: Path) -> None:
    images = make_images(tmp_path / "images", {
        "inventory.img": b"inventory" * 10,
        "pages-1.img": os.urandom(20 * MB),
        "zeros.img": bytes(20 * MB),
        "empty.img": b"",
        "sub/core-1.img": b"core",
    })
    (images / "empty-dir").mkdir()
    stored = store.put("run_abc/1", images)
    assert stored.key == "run_abc/1"
    assert stored.raw_bytes == 40 * MB + 90 + 4
    assert stored.stored_bytes == len(raw_object(store, "run_abc/1"))
    assert stored.stored_bytes < 21 * MB, "the 20 MB zero file takes next to nothing"
    assert stored.seconds > 0
    assert store.exists("run_abc/1")
    assert not store.exists("run_abc/2")

    store.get("run_abc/1", tmp_path / "back")
    assert digests(tmp_path / "back") == digests(images)
    assert (tmp_path / "back" / "empty-dir").is_dir()

    (tmp_path / "empty").mkdir()
    store.get("run_abc/1", tmp_path / "empty")  # an existing empty directory is fine
    assert digests(tmp_path / "empty") == digests(images)
    with pytest.raises(FileExistsError, match="not an empty directory"):
        store.get("run_abc/1", tmp_path / "back")
    assert leftovers(tmp_path) == ["back", "empty", "images", *(["store"] if "local" in store.describe() else [])]

    # Replacing an object under the same key.
    small = make_images(tmp_path / "small", {"inventory.img": b"second"})
    assert store.put("run_abc/1", small).raw_bytes == 6
    store.get("run_abc/1", tmp_path / "second")
    assert digests(tmp_path / "second") == {"inventory.img": hashlib.sha256(b"second").hexdigest()}


def test_zero_pages_shrink_to_almost_nothing(store: CheckpointStore, tmp_path: Path) -> None:
    stored = store.put("zeros", make_images(tmp_path / "images", {"pages-1.img": bytes(20 * MB)}))
    assert stored.raw_bytes == 20 * MB
    assert stored.stored_bytes < stored.raw_bytes // 100


def test_local_store_streams_instead_of_holding_images_in_memory(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path / "store")
    images = make_images(tmp_path / "images", {"a.img": os.urandom(20 * MB), "b.img": os.urandom(20 * MB)})
    tracemalloc.start()
    try:
        store.put("big", images)
        store.get("big", tmp_path / "back")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, f"peak Python allocation {peak / MB:.1f} MB for 40 MB of images"
    assert digests(tmp_path / "back") == digests(images)


def test_local_store_writes_one_file_per_key_and_no_temp_files(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path / "store")
    images = make_images(tmp_path / "images", {"inventory.img": b"x"})
    store.put("run_a/1", images)
    store.put("run_a", images)  # a key that is a prefix of another does not clash
    files = sorted(p.relative_to(tmp_path / "store").as_posix() for p in (tmp_path / "store").rglob("*"))
    assert files == ["run_a", "run_a.tar.zst", "run_a/1.tar.zst"]
    store.delete("run_a/1")
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["run_a.tar.zst"], "empty key folder dropped"
    assert store.describe() == f"local directory {tmp_path / 'store'}"


def test_missing_keys_and_idempotent_delete(store: CheckpointStore, tmp_path: Path) -> None:
    with pytest.raises(CheckpointMissing, match="no checkpoint 'run_x/1'") as caught:
        store.get("run_x/1", tmp_path / "dest")
    assert isinstance(caught.value, CheckpointStoreError)
    assert isinstance(caught.value, CheckpointError)
    assert not (tmp_path / "dest").exists()
    assert not store.exists("run_x/1")
    store.delete("run_x/1")

    store.put("run_x/1", make_images(tmp_path / "images", {"inventory.img": b"x"}))
    store.delete("run_x/1")
    store.delete("run_x/1")
    assert not store.exists("run_x/1")
    with pytest.raises(CheckpointMissing):
        store.get("run_x/1", tmp_path / "dest")


def _truncate_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_middle(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x55  # lands inside the random file: only a checksum can tell
    return bytes(damaged)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", [
    _truncate_half,
    lambda data: data[:-600],  # loses the listing at the end
    lambda data: data[:20],
    lambda data: b"",
    _flip_middle,
    lambda data: os.urandom(len(data)),
], ids=["half", "tail", "header-only", "empty", "flipped-byte", "garbage"])
def test_damaged_object_is_an_error_and_leaves_no_directory(store: CheckpointStore, tmp_path: Path,
                                                            damage: Callable[[bytes], bytes]) -> None:
    images = make_images(tmp_path / "images", {"inventory.img": b"inventory", "pages-1.img": os.urandom(2 * MB),
                                               "zeros.img": bytes(MB)})
    store.put("run_d/1", images)
    plant(store, "run_d/1", damage(raw_object(store, "run_d/1")))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointStoreError, match=r"'run_d/1' .*(corrupt or truncated|is truncated)") as caught:
        store.get("run_d/1", out / "dest")
    assert not isinstance(caught.value, CheckpointMissing)
    assert leftovers(out) == [], "no partial directory, no staging left behind"


def tar_zst(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buffer, closefd=False) as zst, \
            tarfile.open(fileobj=zst, mode="w|") as tar:
        build(tar)
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(("entry", "kind", "link"), [
    ("../evil.img", tarfile.REGTYPE, ""),
    ("sub/../../evil.img", tarfile.REGTYPE, ""),
    ("/tmp/evil.img", tarfile.REGTYPE, ""),
    ("evil.img", tarfile.SYMTYPE, "/etc/passwd"),
    ("evil.img", tarfile.LNKTYPE, "inventory.img"),
    ("evil.img", tarfile.CHRTYPE, ""),
    ("evil.img", tarfile.FIFOTYPE, ""),
])
def test_hostile_archive_entries_are_refused(store: CheckpointStore, tmp_path: Path, entry: str, kind: bytes,
                                             link: str) -> None:
    def build(tar: tarfile.TarFile) -> None:
        add(tar, "inventory.img")
        add(tar, entry, b"pwned", kind, link)

    plant(store, "run_h/1", tar_zst(build))
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    with pytest.raises(CheckpointStoreError, match=r"refusing archive entry"):
        store.get("run_h/1", out / "dest")
    assert leftovers(out) == []
    assert [p.name for p in tmp_path.rglob("evil*")] == []


def test_archive_without_or_with_a_wrong_listing_is_refused(store: CheckpointStore, tmp_path: Path) -> None:
    # What a cut exactly at a tar member boundary looks like: a well-formed tar without the listing.
    plant(store, "run_l/1", tar_zst(lambda tar: add(tar, "inventory.img")))
    with pytest.raises(CheckpointStoreError, match="listing is missing"):
        store.get("run_l/1", tmp_path / "dest")

    def wrong(tar: tarfile.TarFile) -> None:
        add(tar, "inventory.img", b"abc")
        add(tar, LISTING, b'{"format": 1, "files": {"inventory.img": [3, "00"], "core-1.img": [1, "00"]}}')

    plant(store, "run_l/2", tar_zst(wrong))
    with pytest.raises(CheckpointStoreError, match=r"core-1\.img, inventory\.img differ from its listing"):
        store.get("run_l/2", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_put_refuses_links_and_missing_directories(store: CheckpointStore, tmp_path: Path) -> None:
    images = make_images(tmp_path / "images", {"inventory.img": b"x"})
    (images / "link.img").symlink_to(images / "inventory.img")
    with pytest.raises(CheckpointStoreError, match=r"link\.img is not a regular file"):
        store.put("run_p/1", images)
    assert not store.exists("run_p/1")
    with pytest.raises(NotADirectoryError, match="does not exist"):
        store.put("run_p/1", tmp_path / "nowhere")
    if isinstance(store, LocalCheckpointStore):
        assert [p.name for p in store.root.rglob("*") if p.is_file()] == [], "no temp file left"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", ".", "a//b", "a/", "a b", "a\\b", ".hidden",
                                 "run/.x", "-x", "x" * 600, "ünï", "a\nb"])
def test_invalid_keys_are_refused(store: CheckpointStore, tmp_path: Path, key: str) -> None:
    images = make_images(tmp_path / "images", {"inventory.img": b"x"})
    for call in (lambda: store.put(key, images), lambda: store.get(key, tmp_path / "dest"),
                 lambda: store.delete(key), lambda: store.exists(key)):
        with pytest.raises(ValueError, match="invalid checkpoint key"):
            call()


def test_valid_keys(store: CheckpointStore, tmp_path: Path) -> None:
    images = make_images(tmp_path / "images", {"inventory.img": b"x"})
    for key in ["run_abc/1", "A-b.c/d_e/0", "9"]:
        store.put(key, images)
        assert store.exists(key)


def test_open_store_reads_urls(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    default = open_store(None, tmp_path / "data")
    assert isinstance(default, LocalCheckpointStore) and default.root == tmp_path / "data" / "checkpoints"
    assert open_store("", tmp_path).describe() == f"local directory {tmp_path / 'checkpoints'}"
    assert open_store(f"file://{tmp_path}/x%20y", tmp_path).describe() == f"local directory {tmp_path / 'x y'}"
    assert open_store(str(tmp_path / "plain"), tmp_path).describe() == f"local directory {tmp_path / 'plain'}"
    with pytest.raises(ValueError, match="unsupported scheme 'ftp'"):
        open_store("ftp://host/x", tmp_path)
    with pytest.raises(ValueError, match="no bucket"):
        open_store("s3:///x", tmp_path)

    monkeypatch.setenv("OUTLAST_S3_ENDPOINT_URL", s3_endpoint)
    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")]:
        monkeypatch.setenv(name, value)
    s3 = open_store(f"s3://{BUCKET}/via-url", tmp_path)
    assert s3.describe() == f"s3://{BUCKET}/via-url/"
    s3.put("run_u/1", make_images(tmp_path / "images", {"inventory.img": b"through the url"}))
    client = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    assert client.head_object(Bucket=BUCKET, Key="via-url/run_u/1.tar.zst")["ContentLength"] > 0

    monkeypatch.setenv("OUTLAST_CHECKPOINT_STORE", f"s3://{BUCKET}/x")
    assert RuntimeSettings().checkpoint_store == f"s3://{BUCKET}/x"
    monkeypatch.delenv("OUTLAST_CHECKPOINT_STORE")
    assert RuntimeSettings().checkpoint_store is None


COUNTER = """
import time
n = 0
while True:
    n += 1
    print(f"tick {n}", flush=True)
    time.sleep(0.02)
"""


def test_real_criu_dump_survives_the_store(store: CheckpointStore, tmp_path: Path) -> None:
    require_criu()
    log = tmp_path / "task.log"
    pid = restored = None
    try:
        pid = spawn_in_pid_namespace([sys.executable, "-c", COUNTER], dict(os.environ), tmp_path, log)
        wait_for(lambda: len(ticks(log)) >= 5, "the task to tick")
        result = dump(pid, tmp_path / "images")
        pid = None  # dump killed and reaped it
        stored = store.put("run_criu/1", tmp_path / "images")
        assert stored.raw_bytes >= result.image_bytes
        assert stored.stored_bytes < stored.raw_bytes // 2
        shutil.rmtree(tmp_path / "images")

        before = ticks(log)
        store.get("run_criu/1", tmp_path / "fetched")
        restored = restore(tmp_path / "fetched", pidfile=tmp_path / "restored.pid")
        wait_for(lambda: len(ticks(log)) >= len(before) + 5, "ticks after the restore")
        after = ticks(log)
        assert after == list(range(1, len(after) + 1)), "the counter went on from where it was dumped"
    finally:
        kill(pid)
        kill(restored)
