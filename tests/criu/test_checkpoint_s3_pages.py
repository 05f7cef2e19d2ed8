"""Page sharing in the S3 checkpoint store, against moto's S3 server: a version's pages are stored once
in the bucket, images come back byte for byte on another node, and collection never deletes a pack
an archive names, whichever step a killed process stopped at."""

from __future__ import annotations

import datetime
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import boto3
import pytest

from outlast.runtime.checkpoint import S3CheckpointStore
from outlast.runtime.checkpoint.pagepool import BASES_KEPT
from tests.conftest import moto_s3
from tests.criu.test_checkpoint_dedup import PAGE, image, pages
from tests.criu.test_checkpoint_store import digests

BUCKET = "outlast-pages"
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as url:
        yield url


def open_s3(endpoint: str, prefix: str, cache: Path, client: Any = None) -> S3CheckpointStore:
    client = client or boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
    return S3CheckpointStore(BUCKET, prefix, client=client, cache_root=cache)


@pytest.fixture
def prefix() -> str:
    return f"t/{uuid.uuid4().hex}/"


@pytest.fixture
def store(endpoint: str, prefix: str, tmp_path: Path) -> S3CheckpointStore:
    return open_s3(endpoint, prefix, tmp_path / "node-a")


def bucket(store: S3CheckpointStore, under: str = "") -> dict[str, int]:
    """Object key (below the store's prefix) -> size."""
    found = {}
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=store.prefix + under):
        found.update({item["Key"].removeprefix(store.prefix): item["Size"] for item in page.get("Contents", [])})
    return found


def restorable(endpoint: str, prefix: str, key: str, source: Path, tmp_path: Path) -> None:
    """The image comes back byte for byte on another node (an empty cache: only the bucket)."""
    other = open_s3(endpoint, prefix, tmp_path / f"node-{uuid.uuid4().hex[:8]}")
    back = tmp_path / f"back-{uuid.uuid4().hex[:8]}"
    other.get(key, back)
    assert digests(back) == digests(source)


def test_runs_of_a_version_store_only_their_own_pages_and_restore_on_another_node(
        store: S3CheckpointStore, endpoint: str, prefix: str, tmp_path: Path) -> None:
    images = [image(tmp_path / f"images-{n}", n) for n in range(4)]
    stored = [store.put(f"run_{n}/1", path, base="v1") for n, path in enumerate(images)]
    assert stored[0].stored_bytes > 1500 * PAGE // 8, "the first brings the version's pages"
    for later in stored[1:]:
        # Its 30 own pages (compressed) and the archive, not the 1,700 pages it shares.
        assert later.stored_bytes < 30 * PAGE + 8192 < stored[0].stored_bytes // 10, later
    objects = bucket(store)
    assert sum(objects.values()) < stored[0].stored_bytes + 3 * (30 * PAGE + 8192)
    packs = [name for name in objects if name.startswith(".pages/packs/")]
    assert len(packs) == 4 and all(len(Path(name).stem) == 32 for name in packs)
    for n, path in enumerate(images):
        restorable(endpoint, prefix, f"run_{n}/1", path, tmp_path)


def test_restores_on_a_fresh_node_run_side_by_side(store: S3CheckpointStore, endpoint: str, prefix: str,
                                                   tmp_path: Path) -> None:
    images = [image(tmp_path / f"images-{n}", n) for n in range(4)]
    for n, path in enumerate(images):
        store.put(f"run_{n}/1", path, base="v1")
    other = open_s3(endpoint, prefix, tmp_path / "node-b")
    with ThreadPoolExecutor(4) as threads:  # all need the version's pack, which node B does not have yet
        list(threads.map(lambda n: other.get(f"run_{n}/1", tmp_path / f"back-{n}"), range(4)))
    for n, path in enumerate(images):
        assert digests(tmp_path / f"back-{n}") == digests(path)


def test_deletes_free_a_runs_own_pages_and_keep_the_versions(store: S3CheckpointStore, tmp_path: Path) -> None:
    images = [image(tmp_path / f"images-{n}", n) for n in range(3)]
    for n, path in enumerate(images):
        store.put(f"run_{n}/1", path, base="v1")
    for n in range(3):
        store.delete(f"run_{n}/1")
        store.delete(f"run_{n}/1")  # idempotent
    left = bucket(store)
    assert not [name for name in left if name.endswith(".tar.zst") or name.startswith((".pages/keys/",
                                                                                       ".pages/condemned/"))]
    (version_pack,) = [name for name in left if name.startswith(".pages/packs/")]
    pack_id = Path(version_pack).stem
    assert [name for name in left if name.startswith(".pages/refs/")] == [f".pages/refs/{pack_id}/@version/v1"]
    # A later run of the version still shares them.
    assert store.put("run_9/1", image(tmp_path / "images-9", 9), base="v1").stored_bytes < 30 * PAGE + 8192
    # A replaced image releases what only the old one used.
    store.put("run_9/1", image(tmp_path / "images-10", 10, shared=pages(3, 100), libs=b""))
    assert len([name for name in bucket(store, ".pages/packs/")]) == 2


def test_the_sweep_keeps_the_newest_versions_pages(store: S3CheckpointStore, endpoint: str, prefix: str,
                                                  tmp_path: Path) -> None:
    versions = BASES_KEPT + 1
    for n in range(versions):
        store.put(f"run_{n}/1", image(tmp_path / f"images-{n}", n, shared=pages(300 + n, 50), libs=b""),
                  base=f"v{n}")
    store.put("run_old/1", image(tmp_path / "images-old", 99, shared=pages(300, 50), libs=b""), base="v0")
    for n in range(versions):
        store.delete(f"run_{n}/1")
    assert len(bucket(store, ".pages/versions/")) == versions
    assert store.pages.sweep(grace=datetime.timedelta(0))["versions"] == 1
    assert len(bucket(store, ".pages/versions/")) == BASES_KEPT
    holders = {name.split("/", 3)[-1] for name in bucket(store, ".pages/refs/")}
    assert holders == {f"@version/v{n}" for n in range(1, versions)} | {"run_old/1"}
    restorable(endpoint, prefix, "run_old/1", tmp_path / "images-old", tmp_path)  # v0's pages: still its own
    store.delete("run_old/1")
    assert len(bucket(store, ".pages/packs/")) == BASES_KEPT


def test_a_put_that_finds_a_pack_condemned_stores_those_pages_again(
        store: S3CheckpointStore, endpoint: str, prefix: str, tmp_path: Path) -> None:
    first = store.put("run_0/1", image(tmp_path / "images-0", 0), base="v1")
    (pack_name,) = bucket(store, ".pages/packs/")
    # A collector on another node has condemned the version's pack (and has not yet listed its references).
    store.client.put_object(Bucket=BUCKET, Key=f"{store.prefix}.pages/condemned/{Path(pack_name).stem}", Body=b"")
    again = store.put("run_1/1", image(tmp_path / "images-1", 1), base="v1")
    assert again.stored_bytes > first.stored_bytes // 2, "its pages went into a pack of its own"
    restorable(endpoint, prefix, "run_1/1", tmp_path / "images-1", tmp_path)


def _crashing_client(endpoint: str, method: str, match: str, after: bool) -> Any:
    """A client that kills its process at the first `method` call on a key containing `match`,
    before the call or (`after`) once it returned: a crash between two steps."""
    client = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
    real = getattr(client, method)

    def call(*args: Any, **kwargs: Any) -> Any:
        key = str(kwargs.get("Key", args[2] if len(args) > 2 else ""))
        if match not in key:
            return real(*args, **kwargs)
        if not after:
            os._exit(9)
        result = real(*args, **kwargs)
        os._exit(9)
        return result

    setattr(client, method, call)
    return client


def _killed_while(endpoint: str, prefix: str, cache: str, action: str, key: str, images: str,
                  method: str, match: str, after: bool) -> None:
    store = open_s3(endpoint, prefix, Path(cache), _crashing_client(endpoint, method, match, after))
    if action == "delete":
        store.delete(key)
    else:
        store.put(key, Path(images), base="v1")


STEPS = {  # (action, S3 call, on a key containing, after the call?)
    "delete: archive gone, references not": ("delete", "delete_object", ".tar.zst", True),
    "delete: its reference gone, pack not collected": ("delete", "delete_object", ".pages/refs/", True),
    "delete: pack condemned, references not listed again": ("delete", "put_object", "condemned/", True),
    "delete: pack deleted, condemnation left": ("delete", "delete_object", ".pack", True),
    "put: manifest written, no references": ("put", "put_object", ".pages/keys/", True),
    "put: references written, no pack": ("put", "put_object", ".pages/refs/", True),
    "put: pack uploaded, no archive": ("put", "upload_fileobj", ".tar.zst", False),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_process_killed_between_two_steps_leaves_every_run_restorable_and_sweep_clears_the_rest(
        store: S3CheckpointStore, endpoint: str, prefix: str, tmp_path: Path, step: str) -> None:
    action, method, match, after = STEPS[step]
    for n in range(2):
        store.put(f"run_{n}/1", image(tmp_path / f"images-{n}", n), base="v1")
    victim = "run_1/1" if action == "delete" else "run_2/1"
    images = image(tmp_path / "images-2", 2, shared=pages(4, 200)) if action == "put" else tmp_path / "images-1"
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as executor:
        future = executor.submit(_killed_while, endpoint, prefix, str(tmp_path / "node-b"), action, victim,
                                 str(images), method, match, after)
        with pytest.raises(Exception):  # noqa: B017 - the process died: BrokenProcessPool
            future.result()
    restorable(endpoint, prefix, "run_0/1", tmp_path / "images-0", tmp_path)
    swept = store.pages.sweep(grace=datetime.timedelta(0))
    assert sum(swept.values()) >= 1, swept
    restorable(endpoint, prefix, "run_0/1", tmp_path / "images-0", tmp_path)
    left = bucket(store)
    assert not store.exists(victim)
    assert not [name for name in left if name.startswith(".pages/condemned/")]
    keys = {name.removeprefix(".pages/keys/").removesuffix(".json") for name in left if name.startswith(".pages/keys/")}
    assert keys == {"run_0/1", "run_1/1"} - {victim}
    # Every pack left is referenced, every reference names an archive or the kept version.
    packs = {Path(name).stem for name in left if name.startswith(".pages/packs/")}
    refs = [name.removeprefix(".pages/refs/").split("/", 1) for name in left if name.startswith(".pages/refs/")]
    assert packs == {pack for pack, _ in refs}
    assert all(holder == "@version/v1" or store.exists(holder) for _, holder in refs), refs
    for n in range(2):
        store.delete(f"run_{n}/1")
    assert len(bucket(store, ".pages/packs/")) == 1, "only the version's pages are left"
