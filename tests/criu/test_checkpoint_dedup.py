"""Page deduplication in the local checkpoint store: pages shared by the images of one version are
stored once, images come back byte for byte, deletes free what nobody uses, damage is an error.
Ends with real CRIU dumps of children forked from one fork server."""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from outlast.runtime.checkpoint import (
    CheckpointMissing,
    CheckpointStoreError,
    LocalCheckpointStore,
    dump,
    restore,
)
from outlast.runtime.checkpoint.archive import pack
from outlast.runtime.checkpoint.pagepool import _key_name
from tests.criu.fork_parent import fork_children
from tests.criu.test_checkpoint_store import digests, leftovers
from tests.criu.test_criu import (
    kill,
    require_criu,
    subreaper,  # noqa: F401 - autouse: undoes the subreaper flag after each test
    ticks,
    wait_for,
)

PAGE = 4096
MB = 1 << 20


def pages(seed: int, count: int) -> bytes:
    """`count` pages that compress about as well as a Python heap: some random bytes, then zeros."""
    rng = random.Random(seed)
    return b"".join(rng.randbytes(rng.randrange(64, 2048)).ljust(PAGE, b"\0") for _ in range(count))


SHARED = pages(1, 1500)  # what every child of one fork server has from its parent (~6 MB)
LIBS = pages(2, 200)


def image(root: Path, n: int, *, shared: bytes = SHARED, libs: bytes = LIBS) -> Path:
    """A CRIU-like image dir: small *.img files plus pages files, mostly `shared` plus unique pages."""
    root.mkdir(parents=True)
    own = pages(1000 + n, 30)
    files = {
        "inventory.img": b"inventory",
        f"core-{n}.img": os.urandom(300),
        "pagemap-1.img": b"pagemap" + n.to_bytes(4, "little"),
        "pagemap-2.img": b"pagemap two",
        "pages-1.img": shared[: len(shared) // 2] + own + shared[len(shared) // 2:],
        "pages-2.img": libs,
        "pages-3.img": b"",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def packs(store: LocalCheckpointStore) -> list[Path]:
    return sorted(store.pool.packs.glob("*.pack")) if store.pool.packs.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> LocalCheckpointStore:
    return LocalCheckpointStore(tmp_path / "store")


def test_round_trip_is_byte_identical_and_later_images_store_only_their_own_pages(
        store: LocalCheckpointStore, tmp_path: Path) -> None:
    assert store.dedup, "on by default"
    images = [image(tmp_path / f"images-{n}", n) for n in range(3)]
    stored = [store.put(f"run_{n}/1", path) for n, path in enumerate(images)]
    assert stored[0].raw_bytes == sum(p.stat().st_size for p in images[0].iterdir())
    assert len(packs(store)) == 3, "one pack per put that brought new pages"
    # The first image brings the shared pages; the others only their 30 own pages (+ ~1 KB object).
    assert stored[0].stored_bytes > len(SHARED) // 8
    for later in stored[1:]:
        assert later.stored_bytes < 30 * PAGE + 4096 < stored[0].stored_bytes // 10
    for n, path in enumerate(images):
        store.get(f"run_{n}/1", tmp_path / f"back-{n}")
        assert digests(tmp_path / f"back-{n}") == digests(path)
    assert (tmp_path / "back-2" / "pages-3.img").read_bytes() == b""


def test_twenty_similar_images_take_little_more_disk_than_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dedup = LocalCheckpointStore(tmp_path / "dedup")
    plain = LocalCheckpointStore(tmp_path / "plain", dedup=False)
    for n in range(20):
        path = image(tmp_path / f"images-{n}", n)
        plain.put(f"run_{n}/1", path)
        dedup.put(f"run_{n}/1", path)
    one_plain = plain.path("run_0/1").stat().st_size
    assert disk(plain.root) > 19 * one_plain
    assert disk(dedup.root) < 3 * one_plain, "shared pages are on disk once, not 20 times"
    assert len(packs(dedup)) == 20
    dedup.get("run_19/1", tmp_path / "back")
    assert digests(tmp_path / "back") == digests(tmp_path / "images-19")
    with capsys.disabled():
        print(f"\n  20 similar images: plain store {disk(plain.root) / MB:.1f} MB, "
              f"deduplicating store {disk(dedup.root) / MB:.2f} MB")


def test_deletes_keep_other_images_restorable_and_the_last_one_frees_the_pool(
        store: LocalCheckpointStore, tmp_path: Path) -> None:
    for n in range(3):
        store.put(f"run_{n}/1", image(tmp_path / f"images-{n}", n))
    store.delete("run_0/1")  # the image whose put brought the shared pages
    assert not store.exists("run_0/1")
    with pytest.raises(CheckpointMissing):
        store.get("run_0/1", tmp_path / "gone")
    # Pages are freed a pack at a time: the first put's pack also holds the shared pages, so it stays.
    assert len(packs(store)) == 3
    for n in (1, 2):
        store.get(f"run_{n}/1", tmp_path / f"back-{n}")
        assert digests(tmp_path / f"back-{n}") == digests(tmp_path / f"images-{n}")
    store.delete("run_1/1")
    assert len(packs(store)) == 2, "the pack of run_1's own pages is gone"
    store.get("run_2/1", tmp_path / "back-2-again")
    assert digests(tmp_path / "back-2-again") == digests(tmp_path / "images-2")
    store.delete("run_2/1")
    store.delete("run_2/1")  # idempotent
    assert packs(store) == []
    assert [p.name for p in store.root.iterdir()] == [".pages"], "key folders dropped"
    assert store.pool.index.packs() == set() and not store.pool.index.lookup([b"x" * 16]), "nothing indexed"
    index = sum(p.stat().st_size for p in store.pool.root.glob("index.sqlite*"))
    assert disk(store.root) - index < 100, "only the lock file, the (empty) index and empty folders are left"


def test_replacing_an_image_frees_the_pages_only_the_old_one_used(store: LocalCheckpointStore, tmp_path: Path) -> None:
    store.put("run_r/1", image(tmp_path / "a", 1))
    # A different version: nothing shared.
    store.put("run_r/1", image(tmp_path / "b", 2, shared=pages(7, 300), libs=b""))
    (remaining,) = packs(store)
    assert remaining.stat().st_size < len(SHARED) // 8, "the old image's pages are gone"
    store.get("run_r/1", tmp_path / "back")
    assert digests(tmp_path / "back") == digests(tmp_path / "b")
    # Replacing a pooled image with one that has no pages files drops its pages too.
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "inventory.img").write_bytes(b"no pages")
    store.put("run_r/1", tmp_path / "plain")
    assert packs(store) == []


def test_the_pool_is_only_used_for_criu_pages_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = image(tmp_path / "images", 1)
    (files / "pagemap-1.img").unlink()
    (files / "pagemap-2.img").unlink()
    store = LocalCheckpointStore(tmp_path / "store")
    store.put("run_p/1", files)  # no pagemaps: not a CRIU image, packed whole as before
    assert not store.pool.exists()

    monkeypatch.setenv("OUTLAST_CHECKPOINT_DEDUP", "0")
    off = LocalCheckpointStore(tmp_path / "off")
    assert not off.dedup
    off.put("run_o/1", image(tmp_path / "criu", 2))
    assert not off.pool.exists()
    assert off.path("run_o/1").stat().st_size > len(SHARED) // 8, "the pages are in the object"
    # Stores with and without dedup read each other's objects.
    monkeypatch.delenv("OUTLAST_CHECKPOINT_DEDUP")
    on = LocalCheckpointStore(tmp_path / "off")
    on.put("run_o/2", image(tmp_path / "criu-3", 3))
    for key, source in [("run_o/1", "criu"), ("run_o/2", "criu-3")]:
        off.get(key, tmp_path / f"back-{key[-1]}")
        assert digests(tmp_path / f"back-{key[-1]}") == digests(tmp_path / source)


def _flip_in_first_frame(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[200] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "message"), [
    (_flip_in_first_frame, r"is corrupt: page pack \w+ block 0"),
    (lambda path: os.truncate(path, path.stat().st_size // 2), r"corrupt or truncated: page pack .*truncated"),
    (lambda path: os.truncate(path, path.stat().st_size - 1), r"corrupt or truncated: page pack .*truncated"),
    (lambda path: path.write_bytes(os.urandom(path.stat().st_size)), r"corrupt or truncated: page pack"),
    (lambda path: path.unlink(), r"corrupt or truncated: its page pack \w+ is missing"),
], ids=["flipped-byte", "half", "last-byte", "garbage", "missing"])
def test_damaged_pack_is_an_error_and_leaves_no_directory(store: LocalCheckpointStore, tmp_path: Path,
                                                          damage: object, message: str) -> None:
    store.put("run_d/1", image(tmp_path / "images", 1))
    (pack_file,) = packs(store)
    damage(pack_file)  # type: ignore[operator]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointStoreError, match=rf"checkpoint 'run_d/1' .*{message}") as caught:
        store.get("run_d/1", out / "dest")
    assert not isinstance(caught.value, CheckpointMissing)
    assert leftovers(out) == [], "no partial directory, no staging left behind"


@pytest.mark.parametrize("runs", [
    [["../../../etc/passwd", 0, 1]],
    [["0" * 32, 0, 1]],  # a pack that does not exist
    "not a list",
    [["PACK", 0, 10_000]],  # more pages than the pack holds
    [["PACK", -1, 1]],
    [["PACK", 0]],
])
def test_hostile_page_references_are_refused(store: LocalCheckpointStore, tmp_path: Path, runs: object) -> None:
    store.put("run_h/0", image(tmp_path / "images", 1))
    (real,) = packs(store)
    runs = [[real.stem if part == "PACK" else part for part in run] for run in runs] if isinstance(runs, list) \
        else runs
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "pages-1.img").write_bytes(b"")
    with store.path("run_h/1").open("wb") as out:
        pack(hostile, out, {"pages-1.img": (PAGE, "00" * 32, runs)})
    with pytest.raises(CheckpointStoreError, match=r"checkpoint 'run_h/1' .*(corrupt|truncated)"):
        store.get("run_h/1", tmp_path / "out" / "dest")
    assert leftovers(tmp_path / "out") == []


def test_the_pool_holds_the_pages_it_is_given_in_bounded_memory(store: LocalCheckpointStore, tmp_path: Path) -> None:
    import tracemalloc

    images = image(tmp_path / "images", 1)
    (images / "pages-4.img").write_bytes(os.urandom(40 * MB))
    tracemalloc.start()
    try:
        store.put("big", images)
        store.get("big", tmp_path / "back")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * MB, f"peak Python allocation {peak / MB:.1f} MB for 46 MB of images"
    assert digests(tmp_path / "back") == digests(images)


def test_waiting_images_cost_the_process_no_memory_each(store: LocalCheckpointStore, tmp_path: Path) -> None:
    """The page index is on disk (`pageindex`): 40 more stored images, each with 100 pages of its own,
    leave the process's Python heap where it was (an index in memory grew by ~19 KB per image)."""
    import gc
    import tracemalloc

    def own(n: int) -> Path:
        return image(tmp_path / f"images-{n}", n, shared=SHARED[:PAGE * 100] + pages(5000 + n, 100))

    store.put("run_m_0/1", own(0))
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.take_snapshot()
        for n in range(1, 41):
            store.put(f"run_m_{n}/1", own(n))
        gc.collect()
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 40 * 2048, f"{grown / 40:.0f} bytes of Python heap per stored image"
    store.get("run_m_40/1", tmp_path / "back")
    assert digests(tmp_path / "back") == digests(tmp_path / "images-40")


def _put_one_in_process(root: str, key: str, images: str) -> int:
    return LocalCheckpointStore(Path(root)).put(key, Path(images)).stored_bytes


def test_a_damaged_index_is_rebuilt_from_the_packs(store: LocalCheckpointStore, tmp_path: Path) -> None:
    store.put("run_i/1", image(tmp_path / "a", 1))
    for path in store.pool.root.glob("index.sqlite*"):
        path.write_bytes(b"not a database")
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as executor:
        second = image(tmp_path / "b", 2)
        stored = executor.submit(_put_one_in_process, str(store.root), "run_i/2", str(second)).result()
    assert stored < 30 * PAGE + 4096, "the next process found the shared pages again"
    for key, source in (("run_i/1", "a"), ("run_i/2", "b")):
        store.get(key, tmp_path / f"back-{source}")
        assert digests(tmp_path / f"back-{source}") == digests(tmp_path / source)


def test_threads_put_and_delete_at_once(store: LocalCheckpointStore, tmp_path: Path) -> None:
    images = [image(tmp_path / f"images-{n}", n) for n in range(8)]
    second = LocalCheckpointStore(store.root)  # another instance on the same directory, as the runtime has
    barrier = threading.Barrier(4)

    store.put("run_x/1", images[7])

    def work(worker: int) -> None:
        barrier.wait()
        target = store if worker % 2 else second
        for n in range(worker, 8, 4):
            target.put(f"run_{n}/1", images[n])
            target.put(f"run_{n}/2", images[(n + 1) % 8])
            target.delete(f"run_{n}/2")
            target.get("run_x/1", tmp_path / f"x-{n}")  # gets meanwhile see whole images
            assert digests(tmp_path / f"x-{n}") == digests(images[7])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    store.delete("run_x/1")
    for n in range(8):
        assert not store.exists(f"run_{n}/2")
        store.get(f"run_{n}/1", tmp_path / f"back-{n}")
        assert digests(tmp_path / f"back-{n}") == digests(images[n])
    for n in range(8):
        second.delete(f"run_{n}/1")
    assert packs(store) == []


def _put_in_process(root: str, images: list[str], prefix: str) -> int:
    store = LocalCheckpointStore(Path(root))
    for n, path in enumerate(images):
        store.put(f"{prefix}_{n}/1", Path(path))
        store.put(f"{prefix}_{n}/tmp", Path(path))
        store.delete(f"{prefix}_{n}/tmp")
    return len(images)


def test_two_processes_share_one_store(store: LocalCheckpointStore, tmp_path: Path) -> None:
    images = [str(image(tmp_path / f"images-{n}", n)) for n in range(6)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        done = [pool.submit(_put_in_process, str(store.root), images[i::2], f"p{i}") for i in range(2)]
        assert [f.result() for f in done] == [3, 3]
    for i in range(2):
        for n, path in enumerate(images[i::2]):
            store.get(f"p{i}_{n}/1", tmp_path / f"back-{i}-{n}")
            assert digests(tmp_path / f"back-{i}-{n}") == digests(Path(path))
    assert 2 <= len(packs(store)) <= 6
    for i in range(2):
        for n in range(3):
            store.delete(f"p{i}_{n}/1")
    assert packs(store) == []


def _delete_in_process(root: str, key: str) -> None:
    LocalCheckpointStore(Path(root)).delete(key)


def test_leftovers_of_a_crash_are_cleaned_up_by_the_next_process(store: LocalCheckpointStore,
                                                                   tmp_path: Path) -> None:
    store.put("run_c/1", image(tmp_path / "a", 1))
    store.put("run_c/2", image(tmp_path / "b", 2, shared=pages(7, 300), libs=b""))
    second = min(packs(store), key=lambda p: p.stat().st_size)
    pool = store.pool.root
    # A put that crashed after writing its pack, before referencing it; one that crashed mid-write.
    shutil.copy(second, pool / "packs" / ("f" * 32 + ".pack"))
    (pool / "packs" / ".0123.tmp").write_bytes(b"half a pack")
    (pool / "keys" / ".0123.tmp").write_bytes(b"half a record")
    # One that crashed after adding a user entry, before writing the key's record.
    (pool / "users" / second.stem / ("0" * 32)).touch()
    # A delete that crashed after removing the object, before releasing its pages.
    store.path("run_c/1").unlink()
    # This process leaves all that alone (it looks at every key only once) ...
    store.delete("run_c/none")
    assert len(packs(store)) == 3
    # ... the next process to use the store (the runtime after a restart) cleans it up.
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as executor:
        executor.submit(_delete_in_process, str(store.root), "run_c/none").result()
    assert packs(store) == [second]
    assert sorted(p.name for p in pool.rglob(".*")) == []
    assert len(list((pool / "users" / second.stem).iterdir())) == 1
    assert len(list((pool / "keys").iterdir())) == 1
    store.get("run_c/2", tmp_path / "back")
    assert digests(tmp_path / "back") == digests(tmp_path / "b")
    store.delete("run_c/2")
    assert packs(store) == []


def test_a_put_restores_user_entries_a_crash_lost(store: LocalCheckpointStore, tmp_path: Path) -> None:
    store.put("run_u/1", image(tmp_path / "a", 1))
    store.put("run_u/2", image(tmp_path / "b", 2))
    (first,) = [p for p in packs(store) if len(list((store.pool.users / p.stem).iterdir())) == 2]
    (store.pool.users / first.stem / _key_name("run_u/1")).unlink()  # as if a crash lost it
    store.put("run_u/1", image(tmp_path / "c", 3))  # uses the same shared pages again
    store.delete("run_u/2")
    store.get("run_u/1", tmp_path / "back")
    assert digests(tmp_path / "back") == digests(tmp_path / "c")


def test_real_criu_dumps_of_forked_children_share_their_pages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    require_criu()
    server, children = fork_children(5, tmp_path)
    restored = None
    try:
        for _, log in children:
            wait_for(lambda log=log: len(ticks(log)) >= 3, "the child to tick")
        dumps = [dump(pid, tmp_path / f"images-{n}") for n, (pid, _) in enumerate(children)]
        children = [(None, log) for _, log in children]  # dump killed and reaped them
        dedup = LocalCheckpointStore(tmp_path / "dedup")
        plain = LocalCheckpointStore(tmp_path / "plain", dedup=False)
        puts = []
        for n, result in enumerate(dumps):
            plain.put(f"run_{n}/1", result.images_dir)
            puts.append(dedup.put(f"run_{n}/1", result.images_dir))
        assert disk(dedup.root) < disk(plain.root) / 2.5
        assert max(p.stored_bytes for p in puts[1:]) < puts[0].stored_bytes / 4
        with capsys.disabled():
            print(f"\n  5 criu dumps of forked children, {puts[0].raw_bytes / MB:.1f} MB raw each: plain store "
                  f"{disk(plain.root) / MB:.2f} MB, deduplicating {disk(dedup.root) / MB:.2f} MB (first image "
                  f"{puts[0].stored_bytes / MB:.2f} MB, then {[round(p.stored_bytes / MB, 3) for p in puts[1:]]} MB)")

        log = children[3][1]
        before = ticks(log)
        shutil.rmtree(tmp_path / "images-3")
        dedup.get("run_3/1", tmp_path / "fetched")
        restored = restore(tmp_path / "fetched", pidfile=tmp_path / "restored.pid")
        wait_for(lambda: len(ticks(log)) >= len(before) + 5, "ticks after the restore")
        after = ticks(log)
        assert after == list(range(1, len(after) + 1)), "the child went on counting from where it was dumped"
    finally:
        for pid, _ in children:
            kill(pid)
        kill(restored)
        server.send_signal(signal.SIGKILL)
        server.wait()
