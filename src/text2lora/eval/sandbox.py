"""Run untrusted generated code in a contained subprocess.

Layers of containment, each cheap and independent:

- a fresh temporary working directory, removed afterwards;
- ``resource.setrlimit`` in the child: address space (memory), CPU seconds, file size, open files;
- a wall-clock time limit; on expiry the child's whole process group (``start_new_session``) is killed;
- no network: when ``unshare -n`` works (Linux, root or user namespaces) the child runs in an empty
  network namespace; in every case socket creation is blocked inside the child before the code runs;
- a guard installed in the child before the code runs disables ``fork``/``exec``/``subprocess``/
  ``os.system`` (fork bombs), ``socket`` (network) and any write, delete or rename outside the
  temporary directory;
- Python runs isolated (``-I``: no user site, no environment-driven imports) with a minimal
  environment.

Containment is best effort against *accidental* damage by model-written code (the threat model of
HumanEval's own harness), not a security boundary against a determined attacker. A run passes only
when the program exits 0 *and* the runner's end-of-program marker was printed, so ``os._exit(0)``
or ``sys.exit(0)`` before the tests does not count as a pass.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["SandboxResult", "run_code", "run_many", "network_namespace_available"]

_GUARD = r'''
import builtins, io, os, shutil, socket, subprocess, sys, threading
_root = os.path.realpath(os.getcwd())
_marker = os.environ.pop("T2L_SANDBOX_MARKER", "")
def _denied(*a, **k):
    raise PermissionError("disabled in the text2lora sandbox")
def _inside(p):
    try:
        p = os.fspath(p)
    except TypeError:
        return False
    if isinstance(p, bytes):
        p = p.decode(errors="replace")
    if isinstance(p, int):
        return True
    full = os.path.realpath(os.path.join(_root, p))
    return full == _root or full.startswith(_root + os.sep)
_open = builtins.open
def _guarded_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError(f"writing outside the sandbox directory is disabled: {file}")
    return _open(file, mode, *a, **k)
builtins.open = _guarded_open
io.open = _guarded_open
_os_open = os.open
def _guarded_os_open(path, flags, *a, **k):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC) and not _inside(path):
        raise PermissionError(f"writing outside the sandbox directory is disabled: {path}")
    return _os_open(path, flags, *a, **k)
os.open = _guarded_os_open
def _path_guard(fn):
    def g(*paths, **k):
        for p in paths[:2]:
            if not isinstance(p, int) and not _inside(p):
                raise PermissionError(f"changing files outside the sandbox directory is disabled: {p}")
        return fn(*paths, **k)
    return g
for _n in ("remove", "unlink", "rmdir", "rename", "replace", "mkdir", "makedirs", "removedirs", "truncate",
           "chmod", "chown", "link", "symlink", "utime"):
    if hasattr(os, _n):
        setattr(os, _n, _path_guard(getattr(os, _n)))
for _n in ("fork", "forkpty", "system", "popen", "execv", "execve", "execl", "execle", "execlp", "execlpe",
           "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
           "spawnvpe", "posix_spawn", "posix_spawnp", "kill", "killpg", "setuid", "chroot", "chdir", "fchdir"):
    if hasattr(os, _n):
        setattr(os, _n, _denied)
subprocess.Popen = _denied
subprocess.run = subprocess.call = subprocess.check_call = subprocess.check_output = _denied
shutil.rmtree = shutil.move = _denied
class _NoSocket:
    def __init__(self, *a, **k):
        raise PermissionError("network access is disabled in the text2lora sandbox")
socket.socket = _NoSocket
socket.create_connection = socket.create_server = socket.socketpair = socket.fromfd = _denied
try:
    import _socket
    _socket.socket = _NoSocket
except ImportError:
    pass
for _m in ("multiprocessing", "ctypes", "_ctypes", "resource", "psutil"):
    sys.modules[_m] = None
del _m, _n
with _open("prog.py", encoding="utf-8") as _f:
    _src = _f.read()
_g = {"__name__": "__main__", "__builtins__": builtins}
exec(compile(_src, "prog.py", "exec"), _g)
sys.stdout.flush()
print("\n" + _marker, flush=True)
'''


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run."""

    passed: bool
    """Exit code 0 and the program ran to its end."""
    status: str
    """``passed``, ``failed`` (non-zero exit / exception), ``timeout``, ``killed`` (signal, e.g. memory) or
    ``error`` (the sandbox itself could not run)."""
    returncode: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict:
        return {"passed": self.passed, "status": self.status, "returncode": self.returncode,
                "seconds": round(self.seconds, 3), "stderr": self.stderr[-500:]}


@functools.lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """True when ``unshare -n`` can run a command in an empty network namespace here."""
    exe = shutil.which("unshare")
    if not exe or not sys.platform.startswith("linux"):
        return False
    for extra in ([], ["--map-root-user"]):
        try:
            r = subprocess.run([exe, "-n", *extra, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            _UNSHARE_ARGS[:] = [exe, "-n", *extra, "--"]
            return True
    return False


_UNSHARE_ARGS: list[str] = []


def _limits(memory_mb: int, cpu_s: int, file_mb: int):
    def apply() -> None:  # runs in the child between fork and exec
        import resource

        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.geteuid() != 0:  # root ignores RLIMIT_NPROC; the in-process guard covers it
            resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))

    return apply


def _read(path: Path, limit: int = 20_000) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
        return data.decode("utf-8", errors="replace")
    except OSError:
        return ""


def run_code(code: str, timeout: float = 10.0, memory_mb: int = 1024, file_mb: int = 16) -> SandboxResult:
    """Run the Python program ``code`` contained; never raises for anything the code does."""
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="t2l-sandbox-"))
    marker = "T2L-END-" + secrets.token_hex(16)
    try:
        (tmp / "prog.py").write_text(code, encoding="utf-8")
        (tmp / "run.py").write_text(_GUARD, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "T2L_SANDBOX_MARKER": marker,
               "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-I", "-S", "run.py"]
        if network_namespace_available():
            cmd = _UNSHARE_ARGS + cmd
        with open(tmp / "stdout.txt", "wb") as out, open(tmp / "stderr.txt", "wb") as err:
            try:
                proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        start_new_session=True,
                                        preexec_fn=_limits(memory_mb, max(1, int(timeout) + 1), file_mb))
            except OSError as e:
                return SandboxResult(False, "error", None, time.perf_counter() - t0, stderr=str(e))
            try:
                rc = proc.wait(timeout=timeout)
                status = None
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                try:  # kill the whole group: leftovers of a timeout, or children the program left behind
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                rc = proc.wait()
        stdout, stderr = _read(tmp / "stdout.txt"), _read(tmp / "stderr.txt")
        if status is None:
            if rc == 0 and marker in stdout:
                status = "passed"
            elif rc < 0:
                status = "killed"
            else:
                status = "failed"
        stdout = stdout.replace(marker, "").rstrip("\n")
        return SandboxResult(status == "passed", status, rc, time.perf_counter() - t0, stdout, stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_many(programs: Sequence[str], timeout: float = 10.0, memory_mb: int = 1024,
             workers: int | None = None) -> list[SandboxResult]:
    """Run several programs, ``workers`` at a time (default: CPU count, at most 4), in input order."""
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: run_code(c, timeout, memory_mb), programs))
