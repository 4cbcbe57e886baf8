"""Run untrusted generated code inside an OS-level sandbox (bubblewrap), and decide pass/fail.

Each program runs in a fresh ``bwrap`` container:

- a new mount namespace whose root holds only what Python needs, read-only (``/usr``, the ``/lib``
  links, the interpreter's own prefix) plus a private size-limited tmpfs at ``/work`` (the working
  directory, ``HOME`` and ``TMPDIR``); nothing of the host is writable and nothing else is visible;
- no network (an empty network namespace), its own IPC and UTS namespaces;
- its own PID namespace: the host's processes are invisible and cannot be signalled, and when the
  program ends or times out the whole namespace is killed, so no forked or ``setsid`` child survives;
- an unprivileged user: as root, the trusted runner drops to uid/gid 65534 (``nobody``) before any
  program code runs, with no capabilities and ``no_new_privs`` (so setuid binaries do not help);
  as another user, bwrap maps that user to 65534 in a user namespace;
- resource limits: address space, CPU seconds, file size, open files, processes; a wall-clock limit.

The verdict cannot be forged by exiting early or by printing something: a run passes only when the
runner, *after* the program (code and tests) has returned, asks the harness for a per-run 128-bit
nonce through a pipe, prints it as the last line and the sandbox exits 0. The nonce exists only in
the harness until that request; it is in no file, argument, environment variable or memory of the
sandbox while the program runs, so ``os._exit(0)`` before a failing assertion, ``sys.exit(0)``,
or printing any guessed marker all score as failures. Limit: the tests run in the same process as
the code they test, so a program written specifically against this harness could still speak the
pipe protocol itself; see docs/SECURITY.md.

If ``bwrap`` is missing or cannot create its namespaces here, :func:`require_sandbox` (called by
:func:`run_code` and by ``t2l eval`` before any code benchmark starts) raises
:class:`SandboxUnavailable` saying how to install it; there is no weaker fallback.
"""

from __future__ import annotations

import functools
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import T2LError

__all__ = ["SandboxResult", "SandboxUnavailable", "run_code", "run_many", "require_sandbox"]

SANDBOX_UID = 65534
"""The unprivileged uid/gid (``nobody``) that program code runs as."""
WORKDIR = "/work"
HARNESS = "/harness"
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"

# The trusted runner: starts before any program code, sets limits, drops privileges, runs the program,
# and only when it returned asks the harness (fd REQ) for the nonce (fd NONCE) and prints it.
_RUNNER = r'''
import os, resource, sys
req, nonce_fd, mem, cpu, fsize, nproc = map(int, sys.argv[1:7])
def lower(kind, soft):
    hard = resource.getrlimit(kind)[1]
    soft = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
    resource.setrlimit(kind, (soft, soft if os.getuid() == 0 else hard))
lower(resource.RLIMIT_AS, mem)
lower(resource.RLIMIT_CPU, cpu)
lower(resource.RLIMIT_FSIZE, fsize)
lower(resource.RLIMIT_NOFILE, 64)
lower(resource.RLIMIT_CORE, 0)
lower(resource.RLIMIT_NPROC, nproc)
if os.getuid() == 0:
    os.setgroups([])
    os.setgid(%(uid)d)
    os.setuid(%(uid)d)
assert os.getuid() != 0 and os.geteuid() != 0
with open("%(harness)s/prog.py", encoding="utf-8") as f:
    src = f.read()
write, read, exit_ = os.write, os.read, os._exit
sys.argv = ["prog.py"]
g = {"__name__": "__main__", "__builtins__": __builtins__}
del f, lower
exec(compile(src, "prog.py", "exec"), g)
sys.stdout.flush()
sys.stderr.flush()
write(req, b"?")
nonce = read(nonce_fd, 64)
write(1, b"\n" + nonce + b"\n")
exit_(0)
''' % {"uid": SANDBOX_UID, "harness": HARNESS}


class SandboxUnavailable(T2LError):
    """bubblewrap is missing or cannot create its namespaces on this machine."""


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run."""

    passed: bool
    """The program (code and tests) returned to the runner, which then printed the harness's nonce, and
    the sandbox exited 0."""
    status: str
    """``passed``, ``failed`` (non-zero exit, exception, or an exit before the tests finished),
    ``timeout``, ``killed`` (a signal: memory or CPU limit) or ``error`` (the sandbox could not start)."""
    returncode: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict:
        return {"passed": self.passed, "status": self.status, "returncode": self.returncode,
                "seconds": round(self.seconds, 3), "stderr": self.stderr[-500:]}


def _system_binds() -> list[str]:
    """bwrap arguments that make the interpreter and its libraries visible, read-only."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    extra = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix,
                                           os.path.dirname(os.path.realpath(sys.executable)))}
    return args + _binds_with_parents(sorted(p for p in extra if not p.startswith("/usr/")), writable=False)


def _binds_with_parents(paths: Sequence[str], writable: bool) -> list[str]:
    """Bind each host path at the same place, creating world-traversable parents first (bwrap would
    otherwise copy restrictive modes such as /root's 0700 and the unprivileged user could not reach it)."""
    args: list[str] = []
    made = {"/", "/usr"}
    for p in paths:
        parts = Path(p).parts
        for i in range(2, len(parts)):
            parent = str(Path(*parts[:i]))
            if parent not in made:
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += ["--bind" if writable else "--ro-bind", p, p]
        made.add(p)
    return args


def _bwrap_args(harness: Path, work_mb: int, readonly_paths: Sequence[str]) -> list[str]:
    exe = shutil.which("bwrap")
    if exe is None:
        raise SandboxUnavailable(f"code benchmarks run generated programs under bubblewrap (bwrap), which is "
                                 f"not on PATH: {INSTALL_HINT}")
    user = [] if os.geteuid() == 0 else ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    extra = sorted({os.path.realpath(p) for p in readonly_paths})
    return [exe, *user, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv",
            *_system_binds(), *_binds_with_parents(extra, writable=False),
            "--dev", "/dev", "--proc", "/proc",
            "--size", str(work_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", WORKDIR,
            "--ro-bind", str(harness), HARNESS, "--chdir", WORKDIR,
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR, "--setenv", "TMPDIR", WORKDIR,
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "OMP_NUM_THREADS", "1",
            "--", os.path.realpath(sys.executable), "-I", "-S", f"{HARNESS}/run.py"]


@functools.lru_cache(maxsize=1)
def _probe(path_env: str | None) -> str | None:
    """None when a trivial program passes in the sandbox here, else why not (cached per PATH)."""
    try:
        r = _run(" ", timeout=30, memory_mb=512, file_mb=1, readonly_paths=())
    except SandboxUnavailable as e:
        return str(e)
    if r.passed:
        return None
    return (f"bubblewrap (bwrap) is installed but could not start a sandbox here ({r.stderr.strip()[-300:]}); "
            "it needs user namespaces (sysctl kernel.unprivileged_userns_clone=1) or to run as root with "
            f"CAP_SYS_ADMIN; {INSTALL_HINT}")


def require_sandbox() -> None:
    """Raise :class:`SandboxUnavailable` (one line, saying how to fix it) unless the sandbox works here."""
    why = _probe(os.environ.get("PATH"))
    if why:
        raise SandboxUnavailable(why)


def _read(path: Path, limit: int = 20_000) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
        return data.decode("utf-8", errors="replace")
    except OSError:
        return ""


def _nproc_limit() -> int:
    """Processes the program may have: the host's count for the uid it runs as, plus 64 (RLIMIT_NPROC
    counts per real uid, so a fork bomb stops there)."""
    uid = SANDBOX_UID if os.geteuid() == 0 else os.getuid()
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                n += os.stat(f"/proc/{d}").st_uid == uid
            except OSError:
                pass
    return n + 64


def _run(code: str, timeout: float, memory_mb: int, file_mb: int, readonly_paths: Sequence[str]) -> SandboxResult:
    t0 = time.perf_counter()
    host = Path(tempfile.mkdtemp(prefix="t2l-sandbox-"))
    nonce = secrets.token_hex(16).encode()
    fds: list[int] = []
    try:
        harness = host / "harness"
        harness.mkdir()
        (harness / "prog.py").write_text(code, encoding="utf-8")
        (harness / "run.py").write_text(_RUNNER, encoding="utf-8")
        for p in (host, harness):
            p.chmod(0o755)  # readable by the unprivileged user, writable by nobody but us
        for p in harness.iterdir():
            p.chmod(0o644)
        cmd = _bwrap_args(harness, work_mb=max(16, 4 * file_mb), readonly_paths=readonly_paths)
        req_r, req_w = os.pipe()
        nonce_r, nonce_w = os.pipe()
        fds += [req_r, req_w, nonce_r, nonce_w]
        mem = memory_mb * 1024 * 1024
        cmd += [str(req_w), str(nonce_r), str(mem), str(max(1, int(timeout) + 1)),
                str(file_mb * 1024 * 1024), str(_nproc_limit())]
        with open(host / "stdout.txt", "wb") as out, open(host / "stderr.txt", "wb") as err:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        pass_fds=(req_w, nonce_r), start_new_session=True)
            except OSError as e:
                return SandboxResult(False, "error", None, time.perf_counter() - t0, stderr=str(e))
            for fd in (req_w, nonce_r):
                os.close(fd)
                fds.remove(fd)
            status = _serve_nonce(proc, req_r, nonce_w, nonce, t0 + timeout)
            fds.remove(nonce_w)  # closed by _serve_nonce
            if status is None:
                try:
                    proc.wait(timeout=max(0.1, t0 + timeout - time.perf_counter()))
                except subprocess.TimeoutExpired:
                    status = "timeout"
            if proc.poll() is None:
                proc.kill()  # bwrap is the PID namespace's parent: everything inside dies with it
            rc = proc.wait()
        stdout, stderr = _read(host / "stdout.txt"), _read(host / "stderr.txt")
        lines = stdout.rstrip("\n").split("\n")
        if status is None:
            if rc == 0 and lines[-1] == nonce.decode():
                status = "passed"
            elif rc < 0 or rc > 128:
                status = "killed"
            else:
                status = "failed"
        if status == "passed":
            stdout = "\n".join(lines[:-1]).rstrip("\n")
        return SandboxResult(status == "passed", status, rc, time.perf_counter() - t0, stdout, stderr)
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(host, ignore_errors=True)


def _serve_nonce(proc: subprocess.Popen, req_r: int, nonce_w: int, nonce: bytes, deadline: float) -> str | None:
    """Answer the runner's one request for the nonce; returns "timeout" if the deadline passed first."""
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return "timeout"
            ready, _, _ = select.select([req_r], [], [], min(left, 0.5))
            if not ready:
                if proc.poll() is not None:
                    return None
                continue
            if not os.read(req_r, 1):  # every writer closed: the program ended without asking
                return None
            try:
                os.write(nonce_w, nonce)
            except BrokenPipeError:
                pass
            return None
    finally:
        os.close(nonce_w)


def run_code(code: str, timeout: float = 10.0, memory_mb: int = 1024, file_mb: int = 16,
             readonly_paths: Sequence[str] = ()) -> SandboxResult:
    """Run the Python program ``code`` (candidate code followed by its tests) in the sandbox.

    Never raises for anything the code does; raises :class:`SandboxUnavailable` if the sandbox cannot
    run here. ``readonly_paths`` are host directories made visible, read-only, at the same path.
    """
    require_sandbox()
    return _run(code, timeout, memory_mb, file_mb, readonly_paths)


def run_many(programs: Sequence[str], timeout: float = 10.0, memory_mb: int = 1024,
             workers: int | None = None) -> list[SandboxResult]:
    """Run several programs, ``workers`` at a time (default: CPU count, at most 4), in input order."""
    require_sandbox()
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: _run(c, timeout, memory_mb, 16, ()), programs))
