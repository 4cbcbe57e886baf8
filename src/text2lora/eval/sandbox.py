"""Run untrusted generated code inside an OS-level sandbox (bubblewrap), and decide pass/fail outside it.

A :class:`Program` is a solution (the model's code: untrusted), optional setup code and the benchmark's
checks. They run in **two** bubblewrap containers that share nothing but a pair of pipes:

- the *solution sandbox* runs the solution (and the setup code, which builds test inputs from the
  solution's classes, as MBPP 367's does) and then answers calls: "call function ``f`` with these
  arguments", "read attribute ``x``";
- the *checks sandbox* runs the checks. Every name the solution defined is a proxy there: calling it sends
  the arguments across as plain data (JSON) and brings the return value back as plain data, decoded into
  built-in values only (:mod:`text2lora.eval._sandbox_runner`). The ``assert``\\ s therefore compare values
  that the solution's code cannot influence once they are sent: an object whose ``__eq__`` is always true
  arrives as an opaque reference, equal only to itself; a ``sys.settrace`` hook or anything else the
  solution does to its own interpreter stays in its own process; the verdict pipe exists only in the
  checks' process, which the solution cannot see, signal or trace. A run passes when the checks ran to
  their end and wrote ``passed`` on that pipe.

Each container (see docs/SECURITY.md for what each layer stops):

- a new mount namespace whose root holds only what Python needs, read-only (``/usr``, the ``/lib`` links,
  the interpreter's own prefix) plus a private size-limited tmpfs at ``/work`` (working directory,
  ``HOME``, ``TMPDIR``); its own harness directory, with nothing of the other container's;
- no network (an empty network namespace), its own IPC and UTS namespaces;
- its own PID namespace in which the program is PID 1 (``--as-pid-1``): no other process is visible,
  ``/proc`` is its own, and its environment is only what the sandbox sets (``--clearenv``);
- an unprivileged user with no capabilities and ``no_new_privs``: as root, the trusted runner drops to
  uid/gid 65534 before any program code runs; as another user, bwrap maps that user to 65534 in a user
  namespace in which no further user namespace can be made (``--disable-userns``, bubblewrap >= 0.8);
- a seccomp filter (:mod:`text2lora.eval._seccomp`): no new processes (threads are allowed), no
  namespaces, no ``ptrace``, mounts, kernel modules, BPF, io_uring and the like;
- resource limits, soft and hard alike so that the program cannot raise them: address space, CPU
  seconds, file size, 64 open files, processes/threads, no core dumps; a wall-clock limit. As no process
  can be forked, the address-space limit bounds the memory of the whole sandbox (with its tmpfs).

If ``bwrap`` or libseccomp is missing, or bwrap cannot create its namespaces here, :func:`require_sandbox`
(called by :func:`run_code`, :func:`run_many` and by ``t2l eval`` before any code benchmark starts) raises
:class:`SandboxUnavailable` saying how to fix it; there is no weaker fallback.
"""

from __future__ import annotations

import functools
import os
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
from . import _seccomp

__all__ = ["Program", "SandboxResult", "SandboxUnavailable", "run_code", "run_many", "require_sandbox"]

SANDBOX_UID = 65534
"""The unprivileged uid/gid (``nobody``) that program code runs as."""
WORKDIR = "/work"
HARNESS = "/harness"
INSTALL_HINT = ("install bubblewrap and libseccomp (Debian/Ubuntu: apt-get install bubblewrap libseccomp2; "
                "Fedora: dnf install bubblewrap libseccomp)")
RUNNER = Path(__file__).with_name("_sandbox_runner.py")
"""The trusted code that starts each sandbox: limits, privileges, then the solution's or the checks' role."""


class SandboxUnavailable(T2LError):
    """bubblewrap or libseccomp is missing, or bubblewrap cannot create its namespaces on this machine."""


@dataclass(frozen=True)
class Program:
    """What one sandboxed run executes.

    ``solution`` is untrusted code; ``setup`` (trusted) runs after it in the same process and may use its
    names; ``tests`` (trusted) run in a separate sandbox, where every name the solution or the setup
    defined is a proxy that returns plain data. With no tests, a run passes when the solution (and setup)
    ran to their end.
    """

    solution: str
    tests: str = ""
    setup: str = ""

    @property
    def script(self) -> str:
        """The single-file program these parts form as the benchmark defines it (solution, setup, tests), for
        reading or for running without the sandbox's separation."""
        return f"{self.solution}\n\n{self.setup}\n{self.tests}\n"


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run."""

    passed: bool
    """The checks ran to their end in their own sandbox and reported so on their verdict pipe."""
    status: str
    """``passed``, ``failed`` (an exception in the solution, the setup or the checks; an early exit),
    ``timeout``, ``killed`` (a signal: CPU limit, seccomp) or ``error`` (the sandbox could not start)."""
    returncode: int | None
    """The solution's process's exit status (0 when it served the checks to their end)."""
    seconds: float
    stdout: str = ""
    """The solution's output, then the checks' output."""
    stderr: str = ""
    """The solution's error output, then the checks' (an assertion's traceback is last)."""

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
    return args + _binds_with_parents(sorted(p for p in extra if not p.startswith("/usr/")))


def _binds_with_parents(paths: Sequence[str]) -> list[str]:
    """Bind each host path read-only at the same place, creating world-traversable parents first (bwrap
    would otherwise copy restrictive modes such as /root's 0700 and the unprivileged user could not reach it)."""
    args: list[str] = []
    made = {"/", "/usr"}
    for p in paths:
        parts = Path(p).parts
        for i in range(2, len(parts)):
            parent = str(Path(*parts[:i]))
            if parent not in made:
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += ["--ro-bind", p, p]
        made.add(p)
    return args


@functools.lru_cache(maxsize=4)
def _bwrap(path_env: str | None) -> tuple[str, bool]:
    """bwrap's path and whether it has ``--disable-userns`` (bubblewrap 0.8 and later)."""
    exe = shutil.which("bwrap", path=path_env)
    if exe is None:
        raise SandboxUnavailable(f"code benchmarks run generated programs under bubblewrap (bwrap), which is "
                                 f"not on PATH: {INSTALL_HINT}")
    try:
        helptext = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10, env={}).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxUnavailable(f"bubblewrap ({exe}) does not run: {e}; {INSTALL_HINT}") from None
    return exe, "--disable-userns" in helptext


def _bwrap_args(harness: Path, work_mb: int, readonly_paths: Sequence[str], seccomp_fd: int) -> list[str]:
    exe, disable_userns = _bwrap(os.environ.get("PATH"))
    if os.geteuid() == 0:
        # the runner drops to SANDBOX_UID itself; seccomp refuses new user namespaces. bwrap's own init
        # (root, no capabilities) stays PID 1: it dies with bwrap and takes the namespace with it, which a
        # PID 1 running as SANDBOX_UID would not (bwrap, without capabilities, cannot signal another uid)
        user = []
    else:
        # the program is PID 1 and dies with bwrap (same uid); no bwrap process of the user's is visible
        user = ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--as-pid-1"]
        user += ["--disable-userns"] if disable_userns else []
    extra = sorted({os.path.realpath(p) for p in readonly_paths})
    return [exe, *user, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv",
            *_system_binds(), *_binds_with_parents(extra),
            "--dev", "/dev", "--proc", "/proc",
            "--size", str(work_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", WORKDIR,
            "--ro-bind", str(harness), HARNESS, "--chdir", WORKDIR,
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR, "--setenv", "TMPDIR", WORKDIR,
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "OMP_NUM_THREADS", "1",
            "--seccomp", str(seccomp_fd),
            "--", os.path.realpath(sys.executable), "-I", "-S", f"{HARNESS}/run.py"]


@functools.lru_cache(maxsize=4)
def _probe(path_env: str | None) -> str | None:
    """None when a trivial program passes in the sandbox here, else why not (cached per PATH)."""
    try:
        _seccomp.filter_program()
    except OSError as e:
        return f"the code sandbox needs libseccomp for its system-call filter: {e}; {INSTALL_HINT}"
    try:
        r = _run(Program("x = 1", "assert x == 1"), timeout=30, memory_mb=512, file_mb=1, readonly_paths=())
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
    """Threads the program may have (no process can be forked): the host's count of threads of the uid it
    runs as, plus 64 (RLIMIT_NPROC counts every thread of a real uid, the evaluator's own included when
    an ordinary user runs it)."""
    uid = SANDBOX_UID if os.geteuid() == 0 else os.getuid()
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    return n + 64


def _write_harness(d: Path, files: dict[str, str]) -> None:
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text, encoding="utf-8")
        (d / name).chmod(0o644)  # readable by the unprivileged user, writable by nobody but us
    d.chmod(0o755)


def _spawn(cmd: list[str], out: Path, err: Path, fds: Sequence[int], seccomp_fd: int) -> subprocess.Popen:
    with open(out, "wb") as o, open(err, "wb") as e:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e, env={},
                                pass_fds=(*fds, seccomp_fd), start_new_session=True)


def _died_of_signal(rc: int | None) -> bool:
    return rc is not None and (rc < 0 or rc > 128)


def _run(program: Program, timeout: float, memory_mb: int, file_mb: int,
         readonly_paths: Sequence[str]) -> SandboxResult:
    t0 = time.perf_counter()
    deadline = t0 + timeout
    host = Path(tempfile.mkdtemp(prefix="t2l-sandbox-"))
    host.chmod(0o755)
    fds: list[int] = []
    procs: list[subprocess.Popen] = []

    def close(*which: int) -> None:
        for fd in which:
            os.close(fd)
            fds.remove(fd)

    try:
        runner = RUNNER.read_text(encoding="utf-8")
        _write_harness(host / "solution", {"run.py": runner, "solution.py": program.solution,
                                           "setup.py": program.setup})
        _write_harness(host / "checks", {"run.py": runner, "tests.py": program.tests})
        req_r, req_w = os.pipe()    # checks -> solution: calls
        resp_r, resp_w = os.pipe()  # solution -> checks: names, return values
        verdict_r, verdict_w = os.pipe()  # checks -> here
        fds += [req_r, req_w, resp_r, resp_w, verdict_r, verdict_w]
        limits = [str(memory_mb * 1024 * 1024), str(max(1, int(timeout) + 1)), str(file_mb * 1024 * 1024),
                  str(_nproc_limit()), str(SANDBOX_UID)]
        work_mb = max(16, 4 * file_mb)
        for role, role_fds in (("solution", (req_r, resp_w)), ("checks", (resp_r, req_w, verdict_w))):
            seccomp_fd = _seccomp.filter_fd()
            try:
                cmd = _bwrap_args(host / role, work_mb, readonly_paths, seccomp_fd)
                cmd += [role, *map(str, role_fds), *limits]
                procs.append(_spawn(cmd, host / f"{role}.out", host / f"{role}.err", role_fds, seccomp_fd))
            except OSError as e:
                return SandboxResult(False, "error", None, time.perf_counter() - t0, stderr=str(e))
            finally:
                os.close(seccomp_fd)
        solution, checks = procs
        close(req_r, req_w, resp_r, resp_w, verdict_w)  # only the sandboxes hold these now
        timed_out = False
        try:
            checks.wait(timeout=max(0.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            timed_out = True
        verdict = b""
        if not timed_out:
            os.set_blocking(verdict_r, False)
            try:
                verdict = os.read(verdict_r, 16)
            except BlockingIOError:
                pass
        try:  # the solution ends when the checks hang up; a short grace, then it is killed
            solution.wait(timeout=min(1.0, max(0.05, deadline - time.perf_counter())))
        except subprocess.TimeoutExpired:
            pass
        own_rc = solution.poll()
        for p in procs:
            if p.poll() is None:
                p.kill()  # bwrap is the PID namespace's parent: everything inside dies with it
            p.wait()
        if timed_out:
            status = "timeout"
        elif verdict == b"passed" and checks.returncode == 0:
            status = "passed"
        elif _died_of_signal(checks.returncode) or _died_of_signal(own_rc):
            status = "killed"
        else:
            status = "failed"
        stdout = (_read(host / "solution.out") + _read(host / "checks.out")).rstrip("\n")
        stderr = _read(host / "solution.err") + _read(host / "checks.err")
        return SandboxResult(status == "passed", status, solution.returncode, time.perf_counter() - t0,
                             stdout, stderr)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for fd in list(fds):
            close(fd)
        shutil.rmtree(host, ignore_errors=True)


def _as_program(code: str | Program) -> Program:
    return code if isinstance(code, Program) else Program(code)


def run_code(code: str | Program, timeout: float = 10.0, memory_mb: int = 1024, file_mb: int = 16,
             readonly_paths: Sequence[str] = ()) -> SandboxResult:
    """Run a :class:`Program` (or a bare solution with no checks) in the sandbox.

    Never raises for anything the code does; raises :class:`SandboxUnavailable` if the sandbox cannot
    run here. ``memory_mb``, ``timeout`` (wall clock; also the CPU seconds, plus one) and ``file_mb`` hold
    for each of the two sandboxes. ``readonly_paths`` are host directories made visible, read-only, at
    the same path.
    """
    require_sandbox()
    return _run(_as_program(code), timeout, memory_mb, file_mb, readonly_paths)


def run_many(programs: Sequence[str | Program], timeout: float = 10.0, memory_mb: int = 1024,
             workers: int | None = None) -> list[SandboxResult]:
    """Run several programs, ``workers`` at a time (default: CPU count, at most 4), in input order."""
    require_sandbox()
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: _run(_as_program(c), timeout, memory_mb, 16, ()), programs))
