"""The pages of a code version stay in the local store's page pool while no checkpoint uses them
(`PoolWrite.keep_base`): a run that waits alone then stores only its own pages. The last
BASES_KEPT versions are kept; user entries (not fsynced) are rebuilt from the key records."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from outlast.runtime.checkpoint import LocalCheckpointStore, dump, pagebuild
from outlast.runtime.checkpoint.pagepacks import page_hash
from outlast.runtime.checkpoint.pagepool import BASES_KEPT, _key_name
from tests.criu.fork_parent import fork_children
from tests.criu.test_checkpoint_dedup import _delete_in_process, image, packs, pages
from tests.criu.test_checkpoint_store import digests
from tests.criu.test_criu import kill, require_criu, subreaper, ticks, wait_for  # noqa: F401 - subreaper: fixture


@pytest.fixture
def store(tmp_path: Path) -> LocalCheckpointStore:
    return LocalCheckpointStore(tmp_path / "store")


def test_a_versions_pages_stay_pooled_after_its_last_checkpoint_is_deleted(
        store: LocalCheckpointStore, tmp_path: Path) -> None:
    first = store.put("run_a/1", image(tmp_path / "a", 1), base="v1")
    store.delete("run_a/1")
    assert packs(store), "the version's pages are kept"
    second = store.put("run_b/1", image(tmp_path / "b", 2), base="v1")
    assert second.stored_bytes < first.stored_bytes / 4, "the next run stores only its own pages"
    assert {"hash_pages", "write_new_pages", "write_archive"} <= second.parts.keys()
    store.get("run_b/1", tmp_path / "back")
    assert digests(tmp_path / "back") == digests(tmp_path / "b")
    without = LocalCheckpointStore(tmp_path / "plain-pool")
    without.put("run_a/1", image(tmp_path / "c", 1))
    without.delete("run_a/1")
    assert packs(without) == [], "without a base, the last delete frees the pool"


def test_only_the_last_versions_are_kept(store: LocalCheckpointStore, tmp_path: Path) -> None:
    for n in range(BASES_KEPT + 2):  # each version its own pages
        store.put(f"run_{n}/1", image(tmp_path / f"i{n}", n, shared=pages(100 + n, 50), libs=b""), base=f"v{n}")
        store.delete(f"run_{n}/1")
    assert store.pool.kept_bases() == [f"@version/v{n}" for n in range(2, BASES_KEPT + 2)]
    assert len(packs(store)) == BASES_KEPT
    assert len(list(store.pool.keys.iterdir())) == BASES_KEPT


def test_user_entries_a_machine_crash_lost_are_rebuilt_before_any_pack_is_freed(
        store: LocalCheckpointStore, tmp_path: Path) -> None:
    store.put("run_x/1", image(tmp_path / "a", 1))
    store.put("run_x/2", image(tmp_path / "b", 2))
    (shared,) = [p for p in packs(store) if len(list((store.pool.users / p.stem).iterdir())) == 2]
    (store.pool.users / shared.stem / _key_name("run_x/2")).unlink()  # never reached the disk
    # The next process (after the reboot) deletes run_x/1: run_x/2's pages must stay.
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as executor:
        executor.submit(_delete_in_process, str(store.root), "run_x/1").result()
    assert shared.exists()
    fresh = LocalCheckpointStore(store.root)
    fresh.get("run_x/2", tmp_path / "back")
    assert digests(tmp_path / "back") == digests(tmp_path / "b")


def test_a_base_record_no_list_names_is_dropped(store: LocalCheckpointStore, tmp_path: Path) -> None:
    store.put("run_y/1", image(tmp_path / "a", 1), base="v1")
    store.delete("run_y/1")
    store.pool.bases.unlink()  # as if the list of kept versions were lost
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as executor:
        executor.submit(_delete_in_process, str(store.root), "run_y/none").result()
    assert packs(store) == [], "pages no listed version or checkpoint uses are freed"


def test_restores_copy_a_kept_versions_pages_from_an_uncompressed_copy(
        store: LocalCheckpointStore, tmp_path: Path) -> None:
    store.put("run_k/1", image(tmp_path / "a", 1), base="v1")
    store.get("run_k/1", tmp_path / "first")
    (copy,) = store.pool.cache.glob("*.pages")
    assert copy.stem in {p.stem for p in packs(store)}
    copy.write_bytes(copy.read_bytes()[:-1])  # cut short (say, by a crash): rebuilt, never used as it is
    store.put("run_k/2", image(tmp_path / "b", 2), base="v1")
    for n, key in ((1, "run_k/1"), (2, "run_k/2")):
        store.get(key, tmp_path / f"back-{n}")
        assert digests(tmp_path / f"back-{n}") == digests(tmp_path / ("a" if n == 1 else "b"))
    assert copy.stat().st_size % 4096 == 0
    for n in range(2, BASES_KEPT + 2):  # newer versions push v1 out: its pages and their copy go
        store.put(f"run_o/{n}", image(tmp_path / f"o{n}", n, shared=pages(200 + n, 20), libs=b""), base=f"v{n}")
        store.delete(f"run_o/{n}")
    store.delete("run_k/1")
    store.delete("run_k/2")
    assert not copy.exists()


def _get_in_process(root: str, key: str, dest: str) -> None:
    LocalCheckpointStore(Path(root)).get(key, Path(dest))


def test_a_damaged_uncompressed_copy_is_caught_once_per_process_and_rebuilt(
        store: LocalCheckpointStore, tmp_path: Path) -> None:
    """Restores copy pages from the copy without hashing them: each process checks a copy it did
    not build once, against the pack's page hashes, before using it."""
    store.put("run_d/1", image(tmp_path / "a", 1), base="v1")
    store.get("run_d/1", tmp_path / "first")
    (copy,) = store.pool.cache.glob("*.pages")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same size, other bytes
    copy.write_bytes(bytes(data))
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as executor:
        executor.submit(_get_in_process, str(store.root), "run_d/1", str(tmp_path / "back")).result()
    assert digests(tmp_path / "back") == digests(tmp_path / "a")
    assert copy.read_bytes() != bytes(data), "the copy was rebuilt from the pack"


def test_pages_as_kept_at_their_address_are_not_hashed_and_come_back_byte_for_byte(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real CRIU dumps of one fork server's children: the second one's pages are matched with the
    first's by address, and only the few that differ are hashed."""
    require_criu()
    hashed = []
    monkeypatch.setattr(pagebuild, "page_hash", lambda page: hashed.append(1) or page_hash(page))
    store = LocalCheckpointStore(tmp_path / "store")
    server, children = fork_children(3, tmp_path)
    try:
        for _, log in children:
            wait_for(lambda log=log: len(ticks(log)) >= 3, "the child to tick")
        images = [dump(pid, tmp_path / f"images-{n}").images_dir for n, (pid, _) in enumerate(children)]
        children = []  # dump ended and reaped them
        store.put("run_0/1", images[0], base="v1")
        total = len(hashed)
        hashed.clear()
        store.put("run_1/1", images[1], base="v1")
        assert 0 < len(hashed) < total / 10, (len(hashed), total)
        # A wrong map (every piece pointing at other pages) is only a slower hint.
        maps = next(store.pool.base_maps.iterdir())
        wrong = {name: [[vaddr, count, pack, first + 1] for vaddr, count, pack, first in pieces]
                 for name, pieces in json.loads(maps.read_text()).items()}
        maps.write_text(json.dumps(wrong))
        store.put("run_2/1", images[2], base="v1")
        for n in range(3):
            store.get(f"run_{n}/1", tmp_path / f"back-{n}")
            assert digests(tmp_path / f"back-{n}") == digests(images[n])
    finally:
        for pid, _ in children:
            kill(pid)
        server.send_signal(signal.SIGKILL)
        server.wait()
