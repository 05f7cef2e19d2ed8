"""Unpacking a deployment bundle refuses whatever could escape its directory or fill the disk."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from outlast._bundle import pack_bundle, plan_bundle
from outlast._project import load_project
from outlast.runtime.deploy.bundles import (
    BundleError,
    BundleMissing,
    LocalBundleStore,
    UnsafeBundle,
    open_bundle_store,
    unpack_bundle,
)


def _bundle(path: Path, entries: list[tuple[str, bytes | None, str]]) -> Path:
    """entries: (name, data, kind) with kind "file", "dir", "sym:<target>", "hard:<target>", "fifo"."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind.startswith("sym:"):
                info.type, info.linkname = tarfile.SYMTYPE, kind[4:]
            elif kind.startswith("hard:"):
                info.type, info.linkname = tarfile.LNKTYPE, kind[5:]
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b"") if kind == "file" else None)
    return path


@pytest.mark.parametrize(("entry", "reason"), [
    (("/etc/evil.py", b"x", "file"), "outside the bundle"),
    (("../evil.py", b"x", "file"), "outside the bundle"),
    (("pkg/../../evil.py", b"x", "file"), "outside the bundle"),
    (("link", None, "sym:/etc/passwd"), "link out of the bundle"),
    (("link", None, "sym:../outside"), "link out of the bundle"),
    (("pkg/link", None, "sym:sub/../../.."), "link out of the bundle"),
    (("hard", None, "hard:tasks.py"), "hard link"),
    (("pipe", None, "fifo"), "special file"),
])
def test_unsafe_entries_are_refused_and_nothing_is_written(tmp_path, entry, reason):
    bundle = _bundle(tmp_path / "b.tar.gz", [("tasks.py", b"print(1)", "file"), entry])
    dest = tmp_path / "out"
    with pytest.raises(UnsafeBundle, match=reason):
        unpack_bundle(bundle, dest)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar.gz"]  # no staging directory left behind
    assert not (tmp_path.parent / "evil.py").exists()


def test_archive_bombs_are_refused_by_total_size_and_file_count(tmp_path):
    zeros = _bundle(tmp_path / "zeros.tar.gz", [("big.bin", bytes(5_000_000), "file")])
    assert zeros.stat().st_size < 20_000  # it compresses a thousandfold: only the unpacked size tells
    with pytest.raises(UnsafeBundle, match="more than 1000000 bytes"):
        unpack_bundle(zeros, tmp_path / "a", max_bytes=1_000_000)
    many = _bundle(tmp_path / "many.tar.gz", [(f"f{i}.py", b"", "file") for i in range(50)])
    with pytest.raises(UnsafeBundle, match="more than 20 entries"):
        unpack_bundle(many, tmp_path / "b", max_files=20)


def test_a_packed_project_unpacks_to_the_same_files_with_links_inside_it(tmp_path):
    project = tmp_path / "proj"
    (project / "pkg").mkdir(parents=True)
    (project / "tasks.py").write_text("from pkg import helper\n")
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "helper.py").write_text("X = 1\n")
    (project / "alias.py").symlink_to("pkg/helper.py")
    (project / "escape.py").symlink_to("../elsewhere.py")  # left out, and said so in the plan
    (project / ".venv").mkdir()
    (project / ".venv" / "junk.py").write_text("")
    plan = plan_bundle(load_project(project))
    assert [p.relative_to(project).as_posix() for p in plan.files] == ["alias.py", "tasks.py", "pkg/__init__.py",
                                                                       "pkg/helper.py"]
    assert [(p.name, "outside" in why) for p, why in plan.skipped] == [("escape.py", True)]
    data = pack_bundle(plan)
    assert pack_bundle(plan) == data  # reproducible: same tree, same bytes
    (tmp_path / "b.tar.gz").write_bytes(data)
    summary = unpack_bundle(tmp_path / "b.tar.gz", tmp_path / "out")
    out = tmp_path / "out"
    assert summary.files == 4
    assert (out / "pkg" / "helper.py").read_text() == "X = 1\n"
    assert (out / "alias.py").is_symlink() and (out / "alias.py").read_text() == "X = 1\n"


def test_bundle_stores_keep_their_layout_and_say_what_is_missing(tmp_path, monkeypatch):
    source = tmp_path / "b.tar.gz"
    source.write_bytes(b"bundle")
    local = open_bundle_store(None, tmp_path / "data")
    assert isinstance(local, LocalBundleStore)
    assert local.describe() == f"local directory {tmp_path / 'data' / 'bundles'}"
    local.put("dev/20260101.1", source)
    assert (tmp_path / "data" / "bundles" / "dev" / "20260101.1.tar.gz").read_bytes() == b"bundle"
    local.get("dev/20260101.1", tmp_path / "back.tar.gz")
    assert (tmp_path / "back.tar.gz").read_bytes() == b"bundle"
    with pytest.raises(BundleMissing, match=r"no bundle 'dev/20260101\.2' in local directory") as caught:
        local.get("dev/20260101.2", tmp_path / "none.tar.gz")
    assert isinstance(caught.value, BundleError)
    with pytest.raises(ValueError, match="invalid bundle key"):
        local.put("../escape", source)

    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")]:
        monkeypatch.setenv(name, value)
    assert open_bundle_store("s3://bucket", tmp_path).describe() == "s3://bucket/bundles/"  # as it always was
    assert open_bundle_store("s3://bucket/deploys", tmp_path).describe() == "s3://bucket/deploys/"
    assert open_bundle_store(f"file://{tmp_path}/x", tmp_path).describe() == f"local directory {tmp_path / 'x'}"
    for url, message in [("s3:///x", "no bucket"), ("file://host/x", "absolute path"), ("ftp://h/x", "'ftp'")]:
        with pytest.raises(ValueError, match=f"OUTLAST_BUNDLE_STORE '{url}': .*{message}"):
            open_bundle_store(url, tmp_path)
