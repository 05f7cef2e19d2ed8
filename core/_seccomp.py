"""A seccomp filter for task processes under isolation, built with libseccomp (the C library every
Debian host has, apt needs it; Python has no binding of its own in the standard library).

It denies (EPERM) what a task keeps CAP_SYS_ADMIN for nothing but CRIU's sake (see _confine): making
or changing mounts, entering or making namespaces, and the kernel-wide switches that capability
opens (swap, modules, keys, BPF, perf, the clock, reboot); and ptrace-like access to other processes.
Everything else is allowed: a task is ordinary Python. CRIU suspends a task's filter while it dumps
it (PTRACE_O_SUSPEND_SECCOMP), saves it in the image, and sets it again last on restore.
"""

from __future__ import annotations

import ctypes
import errno
import functools

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
_ACT_ERRNO = 0x00050000

DENIED = (
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "unshare", "setns", "chroot", "swapon", "swapoff", "bpf", "perf_event_open", "keyctl",
    "add_key", "request_key", "fanotify_init", "quotactl", "quotactl_fd", "lookup_dcookie", "syslog",
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "ptrace", "process_vm_readv",
    "process_vm_writev", "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "sethostname",
    "setdomainname", "vhangup", "userfaultfd",
)
# clone(2) may not make namespaces either; clone3 passes its flags in memory a filter cannot read, so
# it says ENOSYS and the C library falls back to clone(2).
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                   0x00000080)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def available() -> bool:
    """Whether libseccomp can be loaded here (for `outlast doctor`)."""
    try:
        _lib()
    except OSError:
        return False
    return True


@functools.cache
def prepared() -> int:
    """The filter, built once per process (a fork server builds it before forking its tasks, each
    of which then only loads it); OSError if libseccomp refuses a rule."""
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        deny = _ACT_ERRNO | errno.EPERM
        for name in DENIED:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number >= 0:  # not on this architecture or libseccomp: nothing to deny
                _add(lib, ctx, deny, number, [])
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        for flag in NAMESPACE_FLAGS:
            _add(lib, ctx, deny, clone, [_ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag)])
        if (clone3 := lib.seccomp_syscall_resolve_name(b"clone3")) >= 0:
            _add(lib, ctx, _ACT_ERRNO | errno.ENOSYS, clone3, [])
    except OSError:
        lib.seccomp_release(ctx)
        raise
    return ctx


def install() -> None:
    """Load the filter into this process (kept across fork and exec); OSError if it cannot be."""
    if (result := _lib().seccomp_load(prepared())) != 0:
        raise OSError(-result, f"seccomp_load failed: {errno.errorcode.get(-result, result)}")


def _add(lib: ctypes.CDLL, ctx: int, action: int, number: int, args: list[_ArgCmp]) -> None:
    array = (_ArgCmp * len(args))(*args) if args else None
    if (result := lib.seccomp_rule_add_array(ctx, action, number, len(args), array)) != 0:
        raise OSError(-result, f"seccomp rule for syscall {number} refused: {errno.errorcode.get(-result, result)}")
