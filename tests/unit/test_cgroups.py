"""cgroup detection per controller from /proc files (hybrid, pure v2, none), preset sizes in slots,
and what an attempt's counters say. The real kernel's cgroups are exercised in tests/machines/."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from outlast.runtime.worker import cgroups
from outlast.runtime.worker.attempts import Attempts
from outlast.runtime.worker.cgroups import TaskCgroup, Usage
from outlast.runtime.worker.limits import NodeSize, measure, out_of_memory_error, raise_open_files_limit
from outlast.wire import RetryPolicy, TaskManifest
from outlast.wire.api import TriggerOptions
from outlast.wire.machines import MACHINES, machine_preset

HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = "8:pids:/\n6:devices:/\n4:memory:/api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n"


def fake_proc(tmp_path: Path, mounts: str, cgroup: str) -> Path:
    (tmp_path / "mountinfo").write_text(mounts)
    (tmp_path / "cgroup").write_text(cgroup)
    return tmp_path


def test_a_hybrid_host_has_each_controller_where_it_is_mounted(tmp_path: Path) -> None:
    found, missing = cgroups.detect(fake_proc(tmp_path, HYBRID_MOUNTS, HYBRID_CGROUP))
    assert not missing
    assert {c: (h.version, str(h.mount), h.own) for c, h in found.items()} == {
        "memory": (1, "/sys/fs/cgroup/memory", "/api/abc"), "cpu": (1, "/sys/fs/cgroup/cpu", "/"),
        "cpuacct": (1, "/sys/fs/cgroup/cpuacct", "/"), "pids": (1, "/sys/fs/cgroup/pids", "/"),
        "devices": (1, "/sys/fs/cgroup/devices", "/")}
    cgroup = TaskCgroup(found, "outlast/42/t1")
    assert cgroup.dirs["memory"] == Path("/sys/fs/cgroup/memory/api/abc/outlast/42/t1")
    assert cgroup.criu_roots() == {"memory": "/api/abc/outlast/42/t1", "cpu": "/outlast/42/t1",
                                   "cpuacct": "/outlast/42/t1", "pids": "/outlast/42/t1",
                                   "devices": "/outlast/42/t1"}


def test_co_mounted_v1_controllers_keep_their_hierarchy_name_for_criu(tmp_path: Path) -> None:
    mounts = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n" \
             "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" \
             "39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n" \
             "40 31 0:37 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n"
    found, missing = cgroups.detect(fake_proc(tmp_path, mounts,
                                              "4:devices:/x\n3:cpu,cpuacct:/x\n2:memory:/x\n1:pids:/x\n"))
    assert not missing
    assert found["cpu"].name == found["cpuacct"].name == "cpu,cpuacct"
    assert TaskCgroup(found, "t").criu_roots()["cpu,cpuacct"] == "/x/t"


def test_a_pure_v2_host_has_its_controllers_from_cgroup_controllers(tmp_path: Path) -> None:
    mount = tmp_path / "fs"
    (mount / "runtime.slice").mkdir(parents=True)
    (mount / "runtime.slice" / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mounts = f"30 23 0:27 / {mount} rw,nosuid - cgroup2 cgroup2 rw\n"
    found, missing = cgroups.detect(fake_proc(tmp_path, mounts, "0::/runtime.slice\n"))
    assert set(missing) == {"devices"} and "eBPF" in missing["devices"]  # v2 filters devices with a program
    assert {c: h.version for c, h in found.items()} == {"memory": 2, "cpu": 2, "pids": 2, "cpuacct": 2}
    assert TaskCgroup(found, "outlast/1/t").criu_roots() == {"": "/runtime.slice/outlast/1/t"}


def test_a_controller_nobody_offers_is_missing_with_the_reason(tmp_path: Path) -> None:
    mount = tmp_path / "fs"
    mount.mkdir()
    (mount / "cgroup.controllers").write_text("hugetlb\n")
    mounts = HYBRID_MOUNTS.replace("rw,memory\n", "rw,blkio\n").replace("/sys/fs/cgroup/unified", str(mount))
    found, missing = cgroups.detect(fake_proc(tmp_path, mounts, HYBRID_CGROUP))
    assert "memory" not in found
    assert missing["memory"] == ("not mounted as cgroup v1, and not offered by cgroup v2 "
                                 "(its cgroup.controllers: hugetlb)")


def test_presets_count_in_default_slots_up_to_the_whole_node() -> None:
    attempts = Attempts(4)
    assert [attempts.slots_needed(m) for m in MACHINES.values()] == [0.5, 1, 2, 4, 4, 4, 4]


def test_a_node_refuses_a_preset_larger_than_itself() -> None:
    node = NodeSize(cpus=2, memory_bytes=24 * 2**30)
    assert node.refuses(MACHINES["medium-2x"]) is None
    assert node.refuses(MACHINES["large-1x"]) == (
        "machine large-1x (4 vCPU, 8 GB) is larger than this node (2 vCPU, 24.0 GB); "
        "choose a smaller preset or run it on a larger node")
    assert NodeSize(cpus=16, memory_bytes=2**30).refuses(MACHINES["small-2x"]) is None
    assert NodeSize(cpus=16, memory_bytes=2**30).refuses(MACHINES["medium-1x"]) is not None


def test_an_attempt_is_out_of_memory_only_if_its_cgroup_killed_during_it() -> None:
    start = Usage(cpu_ns=5_000_000, peak_bytes=0, oom_kills=1, memory_limit=2**28)
    measured = measure(start, Usage(cpu_ns=1_505_000_000, peak_bytes=2**28 - 4096, oom_kills=2, memory_limit=2**28))
    assert measured is not None and measured.out_of_memory and measured.cpu_ms == 1500
    assert not measure(start, Usage(cpu_ns=6_000_000, oom_kills=1)).out_of_memory
    error = out_of_memory_error(MACHINES["micro"], measured)
    assert error.type == "TaskOutOfMemoryError"
    assert error.message.startswith("the task process ran out of memory on machine micro: limit 256 MiB, peak 256 MiB")


@pytest.mark.parametrize("declare", [
    lambda: TaskManifest(id="t", machine="huge"),
    lambda: TriggerOptions(machine="huge"),
    lambda: RetryPolicy.model_validate({"out_of_memory": {"machine": "huge"}}),
    lambda: machine_preset("huge"),
])
def test_an_unknown_preset_is_refused_naming_the_valid_ones(declare) -> None:
    with pytest.raises(ValueError, match="unknown machine preset 'huge'; choose one of micro, small-1x, small-2x, "
                                         "medium-1x, medium-2x, large-1x, large-2x"):
        declare()


def test_a_v2_task_cgroup_enables_its_controllers_and_writes_v2_files(tmp_path: Path) -> None:
    """cgroup v2's files, on a directory tree standing in for the cgroup2 mount (no v2 host here)."""
    mount = tmp_path / "fs"
    (mount / "runtime.slice").mkdir(parents=True)
    hierarchies = {c: cgroups.Hierarchy(c, 2, mount, "/runtime.slice", "")
                   for c in ("memory", "cpu", "cpuacct", "pids")}
    cgroup = TaskCgroup(hierarchies, "outlast/7/t1")
    cgroup.create()
    task = mount / "runtime.slice/outlast/7/t1"
    assert task.is_dir()
    for parent in ("runtime.slice", "runtime.slice/outlast", "runtime.slice/outlast/7"):
        assert (mount / parent / "cgroup.subtree_control").read_text() == "+pids"  # the last one written
    cgroup.limit(cpus=0.25, memory_bytes=2**28, pids=64)
    assert (task / "memory.max").read_text() == str(2**28)
    assert (task / "memory.swap.max").read_text() == "0"
    assert (task / "cpu.max").read_text() == "25000 100000"
    assert (task / "pids.max").read_text() == "64"
    assert cgroup.cpu_quota() == 0.25
    (task / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    (task / "memory.peak").write_text("123456\n")
    (task / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroup.usage() == Usage(cpu_ns=1_500_000_000, peak_bytes=123456, oom_kills=1, memory_limit=2**28)
    assert cgroup.procs_files() == (str(task / "cgroup.procs"),)


def test_counters_are_read_afresh_through_kept_descriptors_closed_on_removal(tmp_path: Path) -> None:
    """usage() keeps its counter files open (a read is one pread) yet sees each new value; remove() closes them."""
    mount = tmp_path / "fs"
    (mount / "runtime.slice").mkdir(parents=True)
    hierarchies = {c: cgroups.Hierarchy(c, 2, mount, "/runtime.slice", "") for c in ("memory", "cpuacct")}
    cgroup = TaskCgroup(hierarchies, "outlast/7/t2")
    cgroup.create()
    task = mount / "runtime.slice/outlast/7/t2"
    (task / "memory.max").write_text("1048576\n")
    (task / "memory.events").write_text("oom_kill 0\n")
    (task / "memory.peak").write_text("1000\n")
    (task / "cpu.stat").write_text("usage_usec 5\n")
    open_before = len(os.listdir("/proc/self/fd"))
    assert cgroup.usage() == Usage(cpu_ns=5000, peak_bytes=1000, oom_kills=0, memory_limit=1048576)
    assert len(os.listdir("/proc/self/fd")) == open_before + 4
    (task / "memory.peak").write_text("2000\n")  # in place, as the kernel's counters change
    (task / "cpu.stat").write_text("usage_usec 10000\n")
    (task / "memory.events").write_text("oom_kill 1\n")
    assert cgroup.usage() == Usage(cpu_ns=10_000_000, peak_bytes=2000, oom_kills=1, memory_limit=1048576)
    assert len(os.listdir("/proc/self/fd")) == open_before + 4  # the same descriptors, not new ones
    for name in ("memory.max", "memory.events", "memory.peak", "cpu.stat"):
        (task / name).unlink()  # what the kernel does to a removed cgroup's files
    assert cgroup.remove()
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert cgroup.usage() == Usage()  # gone: nothing to read, no error


def test_the_open_files_limit_is_raised_towards_the_hard_one() -> None:
    """A supervisor enforcing limits holds five descriptors per task cgroup: a soft limit of 1,024 is raised."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, before[1]))
        raise_open_files_limit(wanted=512)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (min(512, before[1]), before[1])
        raise_open_files_limit(wanted=300)  # never lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(512, before[1])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
