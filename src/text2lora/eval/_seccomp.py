"""The seccomp filter of the code sandbox, compiled by libseccomp (called through ctypes).

bubblewrap installs the compiled BPF program (``bwrap --seccomp FD``) on the sandboxed process before it runs
anything. The filter allows every system call except the groups below, which fail with ``EPERM`` (``clone3``
with ``ENOSYS``, so that the C library falls back to ``clone``, whose flags the filter can see). A system call
of another ABI (32-bit ``int 0x80`` or x32 on x86-64) kills the process: libseccomp's filter accepts only the
machine's native one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import platform

__all__ = ["DENIED", "filter_fd", "filter_program"]

DENIED: dict[str, tuple[str, ...]] = {
    "new processes and namespaces (threads stay allowed)": (
        "fork", "vfork", "unshare", "setns"),
    "reading or changing other processes": (
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd"),
    "mounts and the root directory": (
        "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
        "fspick", "mount_setattr"),
    "the kernel and the machine": (
        "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon",
        "swapoff", "syslog", "acct", "quotactl", "quotactl_fd", "sethostname", "setdomainname", "settimeofday",
        "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm", "uselib", "vhangup", "nfsservctl",
        "_sysctl", "lookup_dcookie", "modify_ldt", "personality"),
    "kernel interfaces test code never needs": (
        "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "io_uring_setup",
        "io_uring_enter", "io_uring_register", "name_to_handle_at", "open_by_handle_at", "fanotify_init",
        "mbind", "set_mempolicy", "migrate_pages", "move_pages", "memfd_secret"),
}
"""System calls refused outright, by what they would be used for."""

CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
"""``CLONE_NEWNS``, ``NEWCGROUP``, ``NEWUTS``, ``NEWIPC``, ``NEWUSER``, ``NEWPID``, ``NEWNET``."""
ALLOWED_SOCKET_FAMILIES = (1, 2, 10)
"""``AF_UNIX``, ``AF_INET``, ``AF_INET6`` (the sandbox's network namespace has only a loopback)."""
TERMINAL_IOCTLS = (0x5412, 0x541C)
"""``TIOCSTI`` (type into a terminal) and ``TIOCLINUX``."""

_ALLOW = 0x7FFF0000
_MASKED_EQ, _EQ, _GT = 7, 4, 6


def _errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise OSError(f"libseccomp is not installed ({e})") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_Cmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


@functools.lru_cache(maxsize=1)
def filter_program() -> bytes:
    """The compiled BPF program (raises ``OSError`` saying why when libseccomp is missing or refuses)."""
    lib = _library()
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        raise OSError("libseccomp could not start a filter")
    try:
        def rule(action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # no such call on this machine's ABI: nothing to refuse
                return
            arr = (_Cmp * len(cmps))(*[_Cmp(*c) for c in cmps]) if cmps else None
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc < 0:
                raise OSError(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")

        deny = _errno(errno.EPERM)
        for names in DENIED.values():
            for name in names:
                rule(deny, name)
        flags = 1 if platform.machine().startswith("s390") else 0  # clone's flags argument
        rule(deny, "clone", (flags, _MASKED_EQ, CLONE_THREAD, 0))  # a new process, not a thread
        for ns in CLONE_NAMESPACES:
            rule(deny, "clone", (flags, _MASKED_EQ, ns, ns))
        rule(_errno(errno.ENOSYS), "clone3")  # its flags are in memory the filter cannot read
        rule(deny, "socket", (0, _GT, max(ALLOWED_SOCKET_FAMILIES), 0))
        for family in range(max(ALLOWED_SOCKET_FAMILIES)):
            if family not in ALLOWED_SOCKET_FAMILIES:
                rule(deny, "socket", (0, _EQ, family, 0))
        for request in TERMINAL_IOCTLS:
            rule(deny, "ioctl", (1, _MASKED_EQ, 0xFFFFFFFF, request))
        fd = os.memfd_create("t2l-seccomp-export", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise OSError(f"libseccomp could not export the filter: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A file descriptor at the start of a fresh in-memory copy of :func:`filter_program`, for ``bwrap
    --seccomp``; the caller closes it."""
    fd = os.memfd_create("t2l-seccomp", os.MFD_CLOEXEC)
    os.write(fd, filter_program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
