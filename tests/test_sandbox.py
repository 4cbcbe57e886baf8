"""The code sandbox against hostile programs: every escape is tried against the real bubblewrap sandbox
and the host is checked from outside afterwards (files, processes, sockets), never from the program's
own report."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from text2lora.eval import sandbox
from text2lora.eval.sandbox import SandboxUnavailable, run_code, run_many

SENTINEL_TEXT = "host data, must survive"


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A host directory the program can see (bound read-only) and that host permissions would let anyone
    change: 0777 with a 0666 file, so only the sandbox stands between the program and the file."""
    d = tmp_path / "shared"
    d.mkdir()
    (d / "sentinel.txt").write_text(SENTINEL_TEXT)
    (d / "sentinel.txt").chmod(0o666)
    d.chmod(0o777)
    return d


def _snapshot(d: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (p.read_text(), p.stat().st_mode) for p in sorted(d.iterdir())}


def _host_pids_with(token: str) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if token.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    found.append(int(d))
            except OSError:
                pass
    return found


def _gone(find, within: float = 20.0) -> bool:
    """True once ``find()`` comes back empty; the kernel tears a PID namespace down asynchronously (every
    process gets SIGKILL at once, reaping takes a moment), so wait for that, up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while find():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


ESCAPES = {
    "posix.system": "import posix\nposix.system('touch {d}/by-system; rm -f {s}; echo x > {s}')",
    "ctypes CDLL(None).system": ("import sys\nsys.modules.pop('ctypes', None)\nimport ctypes\n"
                                 "ctypes.CDLL(None).system(b'touch {d}/by-ctypes; rm -f {s}')"),
    "posix.open": ("import posix\nfd = posix.open('{d}/by-posix-open', posix.O_CREAT | posix.O_WRONLY, 0o666)\n"
                   "posix.write(fd, b'x')"),
    "posix.open existing": "import posix\nfd = posix.open('{s}', posix.O_WRONLY | posix.O_TRUNC)",
    "_io.FileIO": "import _io\n_io.FileIO('{s}', 'w').write(b'overwritten')",
    "builtins open append": "open('{s}', 'a').write('more')",
    "posix.unlink": "import posix\nposix.unlink('{s}')",
    "posix.rename": "import posix\nposix.rename('{s}', '{d}/moved')",
    "posix.chmod": "import posix\nposix.chmod('{s}', 0)",
    "shell rm -rf": "import subprocess\nsubprocess.run(['rm', '-rf', '{d}'])",
    "remount": "import posix\nposix.system('mount -o remount,rw {d}; touch {d}/by-remount')",
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_host_files_the_program_can_see_cannot_be_changed(host_dir, name):
    before = _snapshot(host_dir)
    s = host_dir / "sentinel.txt"
    # the program first proves it can see the host file, then tries to change it
    code = f"print(open({str(s)!r}).read())\n" + ESCAPES[name].format(d=host_dir, s=s)
    r = run_code(code, timeout=10, readonly_paths=[str(host_dir)])
    assert SENTINEL_TEXT in r.stdout, (r.status, r.stderr)
    assert _snapshot(host_dir) == before, f"{name} changed the host directory"


def test_host_paths_outside_the_sandbox_are_invisible(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    code = (f"import posix, os\nassert not os.path.exists({str(victim)!r})\n"
            f"posix.system('rm -f {victim}; touch {tmp_path}/created')\n"
            f"import ctypes\nctypes.CDLL(None).unlink({str(victim).encode()!r})\n")
    r = run_code(code, timeout=10)
    assert r.passed, r.stderr  # the assertion inside ran: the path does not exist in the sandbox
    assert victim.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]


def test_host_processes_cannot_be_signalled():
    victim = subprocess.Popen(["sleep", "120"])
    try:
        code = ("import posix, signal\n"
                f"for pid in ({victim.pid}, -1, 1):\n"
                "    try:\n        posix.kill(pid, signal.SIGKILL)\n    except OSError as e:\n        print(pid, e)\n"
                f"posix.system('kill -9 {victim.pid}; pkill sleep')\n")
        run_code(code, timeout=10)
        time.sleep(0.3)  # a delivered SIGKILL would have been acted on by now; poll() is the oracle
        assert victim.poll() is None, "a sandboxed program killed a host process"
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("parent", ["exits at once", "runs past the timeout"])
def test_forked_setsid_children_do_not_survive(parent):
    """Forking is refused (the seccomp filter); were it not, a forked `setsid` child would still die with the
    sandbox's PID namespace. Both are checked: the refusal, and no process with the child's argument after."""
    token = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6) + 1}"  # an argument no other process has
    tail = "import time\ntime.sleep(60)\n" if parent == "runs past the timeout" else ""
    code = ("import os, sys, time\n"
            "try:\n    pid = os.fork()\nexcept OSError as e:\n    print('fork refused', e.errno, flush=True)\n"
            "    pid = -1\n"
            "if pid == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        print('child started', flush=True)\n"
            f"        os.execv('/bin/sleep', ['sleep', '{token}'])\n"
            "    os._exit(0)\n"
            "time.sleep(1)\n" + tail)
    r = run_code(code, timeout=3)
    assert "fork refused 1" in r.stdout and "child started" not in r.stdout, (r.stdout, r.stderr)
    assert _gone(lambda: _host_pids_with(token)), "a forked child outlived the sandbox"


FORGERIES = {
    "os._exit(0) before a failing assertion": "import os\nos._exit(0)\nassert False\n",
    "sys.exit(0) before a failing assertion": "import sys\nsys.exit(0)\nassert False\n",
    "posix._exit through ctypes": "import ctypes\nctypes.CDLL(None)._exit(0)\nassert False\n",
    "guessed marker lines": "print('T2L-END-' + '0' * 32)\nprint('0' * 32)\nprint('passed')\nimport os\nos._exit(0)\n",
    "everything the program can read": (
        "import os, sys\n"
        "print(open('/proc/self/cmdline', 'rb').read().decode(errors='replace').replace(chr(0), chr(10)))\n"
        "print(open('/proc/self/environ', 'rb').read().decode(errors='replace').replace(chr(0), chr(10)))\n"
        "print(open('/harness/run.py').read())\n"
        "for k, v in vars(sys.modules['__main__']).items():\n    print(k, repr(v)[:200])\n"
        "for f in os.listdir('/work') + os.listdir('/harness'):\n    print(f)\n"
        "os._exit(0)\nassert False\n"),
    "a failing test after a clean start": "def f(x):\n    return x + 1\n\nassert f(1) == 3\n",
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_pass_cannot_be_forged(name):
    r = run_code(FORGERIES[name], timeout=10)
    assert not r.passed and r.status != "passed", f"{name} scored a pass"


def test_correct_programs_pass_and_keep_their_output():
    """The control: a correct program with its tests passes, writes in its scratch directory, and its own
    output comes back without the harness's nonce line."""
    code = ("def add(a, b):\n    return a + b\n\n"
            "open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n"
            "import tempfile\nwith tempfile.TemporaryFile() as t:\n    t.write(b'x')\n"
            "def check(c):\n    assert c(2, 3) == 5\n\ncheck(add)\nprint('fine')\n")
    r = run_code(code)
    assert r.passed and r.status == "passed" and r.returncode == 0, r.stderr
    assert r.stdout == "fine"


def test_program_runs_unprivileged_without_capabilities(host_dir):
    secret = host_dir / "secret.txt"
    secret.write_text("only the owner may read this")
    secret.chmod(0o600)
    code = ("import os\nstatus = open('/proc/self/status').read()\n"
            "caps = {l.split(':')[0]: int(l.split()[1], 16) for l in status.splitlines() if l.startswith('Cap')}\n"
            "nnp = [l for l in status.splitlines() if l.startswith('NoNewPrivs')][0].split()[1]\n"
            "print(os.getuid(), os.geteuid(), os.getgid(), caps['CapEff'], caps['CapPrm'], nnp)\n"
            f"try:\n    open({str(secret)!r}).read()\n    print('read the secret')\nexcept PermissionError:\n"
            "    print('denied')\n")
    r = run_code(code, timeout=10, readonly_paths=[str(host_dir)])
    assert r.passed, r.stderr
    ids, access = r.stdout.splitlines()
    assert ids == f"{sandbox.SANDBOX_UID} {sandbox.SANDBOX_UID} {sandbox.SANDBOX_UID} 0 0 1"
    if os.geteuid() == 0:  # as root, the program is the host's uid 65534, not the file's owner
        assert access == "denied"


def test_no_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'escaped')\n")
    r = run_code(code, timeout=10)
    assert not r.passed and ("OSError" in r.stderr or "Error" in r.stderr)
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()


def test_limits_contain_loops_memory_files_and_fork_bombs():
    programs = {
        "infinite loop": "while True:\n    pass\n",
        "memory hog": "x = bytearray(8 * 1024 ** 3)\n",
        "huge file": "with open('big', 'wb') as f:\n    for _ in range(10_000):\n        f.write(b'x' * 1024 * 1024)\n",
        "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    }
    results = dict(zip(programs, run_many(list(programs.values()), timeout=3, memory_mb=512, workers=2)))
    assert not any(r.passed for r in results.values())
    assert results["infinite loop"].status == "timeout"
    assert results["memory hog"].status == "killed" or "MemoryError" in results["memory hog"].stderr
    assert "File too large" in results["huge file"].stderr or "No space left" in results["huge file"].stderr \
        or results["huge file"].status == "killed"
    # nothing of the fork bomb is left on the host
    uid = sandbox.SANDBOX_UID if os.geteuid() == 0 else os.getuid()
    assert _gone(lambda: [d for d in os.listdir("/proc") if d.isdigit() and _is_sandbox_python(d, uid)])
    # and evaluation goes on
    assert run_code("print('still here')").passed


def _is_sandbox_python(pid: str, uid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == uid and b"/harness/run.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_missing_bubblewrap_refuses_with_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    for call in (lambda: run_code("print(1)"), lambda: run_many(["print(1)"]), sandbox.require_sandbox):
        with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
            call()


def test_concurrent_runs_are_isolated_from_each_other():
    """Two programs at once: one cannot see or signal the other (each has its own PID namespace)."""
    code = ("import os, time\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
            "for pid in range(2, 200):\n    try:\n        os.kill(pid, 9) if pid != os.getpid() else None\n"
            "    except OSError:\n        pass\ntime.sleep(1)\nprint('alive')\n")
    results = []
    threads = [threading.Thread(target=lambda: results.append(run_code(code, timeout=10))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.passed and r.stdout.endswith("alive") for r in results), [r.stderr for r in results]
