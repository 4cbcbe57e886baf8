"""Hostile programs against the code sandbox, second round: limits that an ordinary user's program could
raise, the evaluator's environment seen through /proc, memory multiplied by forking, nested user
namespaces, no system-call filter, and passes forged inside the interpreter that ran the asserts
(an always-equal return value, a ``sys.settrace`` jump, the verdict pipe found by scanning descriptors).

Each test is one of those reproductions, run through the real scoring path (``metrics.code_program`` and
the bubblewrap sandbox); effects are measured from the host (memory, processes) wherever they can be.
CI runs as root, so :func:`test_the_probes_hold_as_an_unprivileged_user` runs this module and
tests/test_sandbox.py again as an unprivileged uid, in a private mount namespace."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from text2lora.data import Example
from text2lora.eval import metrics
from text2lora.eval.sandbox import run_code, run_many

MiB = 1 << 20


def _humaneval(test: str, entry: str = "f", prompt: str = "") -> Example:
    return Example(prompt="", response="", meta={"code_prompt": prompt, "entry_point": entry, "test": test})


def _mbpp(tests: list[str], setup: str = "") -> Example:
    return Example(prompt="", response="", meta={"test_list": tests, "test_setup_code": setup})


def _scored(completion: str, example: Example, **kw):
    """The sandbox's result for ``completion`` on ``example``, as ``t2l eval`` scores it."""
    return run_code(metrics.code_program(f"```python\n{completion}\n```", example), **kw)


# ----------------------------------------------------------------------------- limits (reproduction 2)

LIMITS = {  # kind -> expected (soft = hard) for run_code(timeout=10, memory_mb=256, file_mb=4)
    "RLIMIT_AS": 256 * MiB, "RLIMIT_CPU": 11, "RLIMIT_FSIZE": 4 * MiB, "RLIMIT_NOFILE": 64, "RLIMIT_NPROC": None}


@pytest.mark.parametrize("kind", list(LIMITS))
def test_hard_limits_cannot_be_raised(kind):
    """An unprivileged program may raise a soft limit up to its hard limit: both must be the sandbox's."""
    code = ("import resource\n"
            f"k = resource.{kind}\n"
            "for new in ((resource.RLIM_INFINITY, resource.RLIM_INFINITY), (resource.getrlimit(k)[1],) * 2):\n"
            "    try:\n        resource.setrlimit(k, new)\n    except (ValueError, OSError):\n        pass\n"
            "print(*resource.getrlimit(k))\n")
    r = run_code(code, timeout=10, memory_mb=256, file_mb=4)
    assert r.passed, r.stderr
    soft, hard = map(int, r.stdout.split())
    assert soft == hard, f"{kind}: hard limit {hard} above the soft limit {soft}: the program could raise it"
    if LIMITS[kind] is not None:
        assert soft == LIMITS[kind]
    else:
        assert 0 < soft < 10**6


def test_memory_cannot_be_raised_past_the_limit():
    # the reproduction: raise RLIMIT_AS to unlimited, then allocate 600 MiB under memory_mb=256
    token = _token()
    code = (_name_process(token) + "import resource\n"
            "try:\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nexcept (ValueError, OSError):\n    pass\n"
            "try:\n    x = b'x' * (600 << 20)\n    print('allocated')\nexcept MemoryError:\n    print('refused')\n"
            "import time\ntime.sleep(1)\n")
    peak, seen = _measure(token, lambda: run_code(code, timeout=10, memory_mb=256))
    r = _measure.result
    assert seen, ("the probe's process was never seen from the host: the measurement did not happen", r)
    assert "refused" in r.stdout and "allocated" not in r.stdout, (r.stdout, r.stderr)
    assert peak <= 256 * MiB, f"the sandbox held {peak / MiB:.0f} MiB under a 256 MiB limit"


def test_files_and_descriptors_stay_limited_after_trying_to_raise_them():
    code = ("import resource\n"
            "for k in (resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE):\n"
            "    try:\n        resource.setrlimit(k, (-1, -1))\n    except (ValueError, OSError):\n        pass\n"
            "try:\n    open('big', 'wb').write(b'x' * (8 << 20))\n    print('wrote 8 MiB')\nexcept OSError as e:\n"
            "    print('file refused', e.errno)\n"
            "fs = []\ntry:\n    for _ in range(1000):\n        fs.append(open('/dev/null'))\nexcept OSError as e:\n"
            "    print('fds refused at', len(fs))\n")
    r = run_code(code, timeout=10, file_mb=4)
    assert r.passed, r.stderr
    assert "file refused 27" in r.stdout  # EFBIG
    opened = int(re.search(r"fds refused at (\d+)", r.stdout).group(1))
    assert opened < 64


def test_no_process_or_environment_of_the_host_is_visible(monkeypatch):
    """The evaluator's environment (tokens, API keys) must not be readable: not through /proc/1 (bubblewrap's
    own init, which an ordinary user's program could read before), nor through any other process. The only
    other process the program may see is that init when it runs as root (and so out of the program's reach)."""
    secret = _token()
    monkeypatch.setenv("T2L_PROBE_SECRET", secret)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", secret],
                              env={"T2L_PROBE_SECRET": secret})
    try:
        code = ("import os\n"
                "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
                "print('me', os.getpid(), os.getuid())\n"
                "for p in pids:\n    print('pid', p, os.stat(f'/proc/{p}').st_uid)\n"
                "for p in pids + [1, 2, 3]:\n"
                "    for f in ('environ', 'cmdline', 'mem'):\n"
                "        try:\n            print(p, f, open(f'/proc/{p}/{f}', 'rb').read(1 << 16))\n"
                "        except OSError as e:\n            print(p, f, e)\n"
                "print('keys', sorted(os.environ))\n")
        r = run_code(code, timeout=10)
    finally:
        victim.kill()
        victim.wait()
    assert r.passed, r.stderr
    assert secret not in r.stdout
    me, uid = map(int, re.search(r"me (\d+) (\d+)", r.stdout).groups())
    others = {int(p): int(u) for p, u in re.findall(r"pid (\d+) (\d+)", r.stdout) if int(p) != me}
    assert set(others) <= {1}, f"the program sees other processes: {others}"
    assert all(u != uid for u in others.values()), "bubblewrap's init runs as the program's uid"
    keys = set(eval(re.search(r"keys (\[.*\])", r.stdout).group(1)))
    assert keys <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
                    "OMP_NUM_THREADS", "PWD"}, keys


# ----------------------------------------------------------------------------- the whole tree (reproduction 7)

def _token() -> str:
    return "t2l" + secrets.token_hex(6)  # 15 characters: fits a process name (comm)


def _name_process(token: str) -> str:
    """Code that names the program's process ``token`` (its comm, visible to the host in /proc)."""
    return f"import ctypes\nctypes.CDLL(None).prctl(15, {token.encode()!r}, 0, 0, 0)\n"


def _measure(token: str, run) -> tuple[int, int]:
    """``(peak summed RSS in bytes, processes seen)`` of the host's processes named ``token`` while
    ``run()`` runs (its result is left in ``_measure.result``)."""
    peak, seen, done = 0, set(), threading.Event()

    def poll():
        nonlocal peak
        while not done.is_set():
            total = 0
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    if Path(f"/proc/{d}/comm").read_text().strip() != token:
                        continue
                    status = Path(f"/proc/{d}/status").read_text()
                except OSError:
                    continue
                m = re.search(r"VmRSS:\s+(\d+) kB", status)
                seen.add(d)
                total += int(m.group(1)) * 1024 if m else 0
            peak = max(peak, total)
            time.sleep(0.01)

    t = threading.Thread(target=poll)
    t.start()
    try:
        _measure.result = run()
    finally:
        done.set()
        t.join()
    return peak, len(seen)


@pytest.mark.parametrize("how", ["processes", "threads"])
def test_memory_limit_holds_for_the_whole_sandbox(how):
    # the reproduction: 6 children of 200 MiB each under memory_mb=256 (a 1,240 MB peak before)
    token = _token()
    if how == "processes":
        body = ("import os, time\nkids = 0\n"
                "for _ in range(6):\n"
                "    try:\n        pid = os.fork()\n    except OSError as e:\n        print('fork refused', e.errno)\n"
                "        break\n"
                "    if pid == 0:\n        x = b'x' * (200 << 20)\n        print('child allocated', flush=True)\n"
                "        time.sleep(2)\n        os._exit(0)\n"
                "    kids += 1\n"
                "for _ in range(kids):\n    os.wait()\n"
                "time.sleep(1)\n")
    else:
        body = ("import threading, time\nheld = []\n"
                "def hog():\n    try:\n        held.append(b'x' * (200 << 20))\n"
                "        print('thread allocated', flush=True)\n"
                "    except MemoryError:\n        print('thread refused', flush=True)\n    time.sleep(2)\n"
                "ts = []\n"
                "for _ in range(6):\n    t = threading.Thread(target=hog)\n"
                "    try:\n        t.start()\n        ts.append(t)\n"
                "    except RuntimeError:\n        print('thread not started')\n"  # RLIMIT_NPROC is shared
                "for t in ts:\n    t.join()\ntime.sleep(1)\n")
    peak, seen = _measure(token, lambda: run_code(_name_process(token) + body, timeout=20, memory_mb=256))
    r = _measure.result
    assert seen, ("the probe's process was never seen from the host: the measurement did not happen", r)
    allocated = r.stdout.count("allocated")
    assert allocated * 200 <= 256, f"{allocated} x 200 MiB allocated under memory_mb=256"
    assert peak <= 256 * MiB, f"the sandbox held {peak / MiB:.0f} MiB under a 256 MiB limit ({seen} processes)"
    if how == "processes":
        assert "fork refused 1" in r.stdout and seen == 1  # EPERM: no second process ever existed


def test_new_processes_are_refused_but_threads_work():
    code = ("import os, subprocess, threading, concurrent.futures as cf\n"
            "for name, call in [('fork', os.fork), ('posix_spawn', lambda: os.posix_spawn('/bin/true', ['true'], {})),"
            " ('subprocess', lambda: subprocess.run(['true']))]:\n"
            "    try:\n        call()\n        print(name, 'ran')\n"
            "    except OSError as e:\n        print(name, 'refused')\n"
            "print('system', os.system('true'))\n"
            "with cf.ThreadPoolExecutor(4) as pool:\n    print('threads', sum(pool.map(lambda i: i * i, range(10))))\n")
    r = run_code(code, timeout=10)
    assert r.passed, r.stderr
    for name in ("fork", "posix_spawn", "subprocess"):
        assert f"{name} refused" in r.stdout, r.stdout
    assert "system 0" not in r.stdout and "threads 285" in r.stdout


# ----------------------------------------------------------------------------- namespaces and seccomp

def test_nested_user_namespaces_are_refused():
    # the reproduction was `unshare -Ur id`, which gave uid 0 inside
    code = ("import ctypes, os, subprocess\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "try:\n    print(subprocess.run(['unshare', '-Ur', 'id'], capture_output=True, text=True).stdout)\n"
            "except OSError as e:\n    print('unshare command refused')\n"
            "NEWUSER = 0x10000000\n"
            "print('unshare', libc.unshare(NEWUSER), ctypes.get_errno())\n"
            "print('clone', libc.syscall(56, NEWUSER | 17, 0, 0, 0, 0), ctypes.get_errno())\n"
            "print('setns', libc.setns(os.open('/proc/self/ns/user', os.O_RDONLY), 0), ctypes.get_errno())\n"
            "print('uid_map', open('/proc/self/uid_map').read().split())\n")
    r = run_code(code, timeout=10)
    assert r.passed, r.stderr
    assert "uid=0" not in r.stdout and "unshare command refused" in r.stdout
    assert "unshare -1 1" in r.stdout and "setns -1 1" in r.stdout
    if os.uname().machine == "x86_64":  # syscall 56 is clone there
        assert "clone -1 1" in r.stdout


def _syscall_number(name: str) -> int:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    return lib.seccomp_syscall_resolve_name(name.encode())


# calls an unprivileged process may otherwise make (so EPERM is the filter's answer), with harmless arguments
FILTERED = {"ptrace": (0, 0, 0, 0),                    # PTRACE_TRACEME
            "keyctl": (0, -1, 0, 0),                   # KEYCTL_GET_KEYRING_ID of the thread keyring
            "io_uring_setup": (1, 0, 0, 0),            # (a NULL params pointer: EFAULT if it got through)
            "process_vm_readv": (0, 0, 0, 0),
            "personality": (0xFFFFFFFF, 0, 0, 0),      # only queries
            "unshare": (0x10000000, 0, 0, 0)}


@pytest.mark.parametrize("name", list(FILTERED))
def test_seccomp_refuses_calls_test_code_never_needs(name):
    nr = _syscall_number(name)
    if nr < 0:
        pytest.skip(f"{name} does not exist on {os.uname().machine}")
    args = ", ".join(map(str, FILTERED[name]))
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"print(libc.syscall({nr}, {args}), ctypes.get_errno())\n"
            "print([l for l in open('/proc/self/status') if l.startswith('Seccomp:')][0].split()[1])\n")
    r = run_code(code, timeout=10)
    assert r.passed, r.stderr
    assert r.stdout.split() == ["-1", "1", "2"], r.stdout  # EPERM, and a filter is in force (mode 2)


def test_netlink_sockets_are_refused():
    code = ("import socket\nfor fam in (socket.AF_NETLINK, socket.AF_PACKET):\n"
            "    try:\n        socket.socket(fam, socket.SOCK_RAW)\n        print('opened')\n"
            "    except OSError as e:\n        print('refused', e.errno)\n"
            "socket.socket(socket.AF_UNIX).close()\nprint('unix ok')\n")
    r = run_code(code, timeout=10)
    assert r.passed, r.stderr
    assert r.stdout.split("\n") == ["refused 1", "refused 1", "unix ok"]


# ----------------------------------------------------------------------------- forged passes (reproduction 8)

HE_FAILING = _humaneval("def check(candidate):\n    assert candidate(2) == 5\n    assert candidate(3) == 7\n"
                        "    assert True, 'This prints if this assert fails'\n")

FORGERIES = {
    "a return value whose __eq__ is always true": (
        "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
        "def f(x):\n    return Yes()\n"),
    "an int whose __eq__ is always true": (
        "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def f(x):\n    return I(0)\n"),
    "a str whose __eq__ is always true, and __ne__": (
        "class S(str):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    __hash__ = str.__hash__\n"
        "def f(x):\n    return S('no')\n"),
    "a sys.settrace jump over the asserts": (
        "import dis, sys\n"
        "def tracer(frame, event, arg):\n"
        "    if not frame.f_code.co_filename.endswith(('prog.py', 'tests.py', 'solution.py')):\n        return None\n"
        "    code = frame.f_code\n"
        "    asserts = {i.positions.lineno for i in dis.get_instructions(code) if i.opname == 'LOAD_ASSERTION_ERROR'}\n"
        "    lines = sorted({i.positions.lineno for i in dis.get_instructions(code) if i.positions.lineno})\n"
        "    def local(frame, event, arg):\n"
        "        if event == 'line' and frame.f_lineno in asserts:\n"
        "            for target in reversed([l for l in lines if l > frame.f_lineno]):\n"
        "                try:\n                    frame.f_lineno = target\n                    break\n"
        "                except ValueError:\n                    pass\n"
        "        return local\n"
        "    return local\n"
        "sys.settrace(tracer)\n"
        "def f(x):\n    return 0\n"),
    "the verdict pipe found by scanning file descriptors": (
        "import os, select\n"
        "fds = [int(d) for d in os.listdir('/proc/self/fd') if int(d) > 2]\n"
        "for fd in fds:\n"
        "    try:\n        os.write(fd, b'?')\n    except OSError:\n        pass\n"
        "for fd in fds:\n"
        "    try:\n"
        "        if select.select([fd], [], [], 0.5)[0]:\n"
        "            data = os.read(fd, 64)\n"
        "            if len(data) == 32:\n"
        "                os.write(1, b'\\n' + data + b'\\n')\n                os._exit(0)\n"
        "    except OSError:\n        pass\n"
        "for fd in fds:\n"
        "    try:\n        os.write(fd, b'passed\\n[\"ok\", 5]\\n[\"ok\", 7]\\n')\n    except OSError:\n        pass\n"
        "def f(x):\n    return 0\n"),
    "reading the expected values from the checks": (
        "import os, re\n"
        "expected = {}\n"
        "for root in ('/harness', '/work', '/tmp', '/'):\n"
        "    for d, _, files in os.walk(root):\n"
        "        for n in files:\n"
        "            try:\n                text = open(os.path.join(d, n), errors='ignore').read(1 << 20)\n"
        "            except OSError:\n                continue\n"
        "            for a, b in re.findall(r'candidate\\((\\d+)\\) == (\\d+)', text):\n"
        "                expected[int(a)] = int(b)\n"
        "        if d.count('/') > 3:\n            break\n"
        "def f(x):\n    return expected.get(x, 0)\n"),
    "a built-in shadowed inside the asserts": (
        "def abs(x):\n    return 0\n"
        "def f(x):\n    return 0\n"),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_wrong_answer_cannot_forge_a_pass(name):
    example = HE_FAILING
    if name == "a built-in shadowed inside the asserts":
        example = _humaneval("def check(candidate):\n    assert abs(candidate(2) - 0.5) < 1e-6\n")
    r = _scored(FORGERIES[name], example, timeout=10)
    assert not r.passed and r.status != "passed", f"{name} scored a pass"


def test_a_wrong_answer_fails_and_the_right_one_passes_under_each_forgery_harness():
    """The control for the forgeries: the same example with a correct ``f`` passes, with a wrong one fails."""
    good = "def f(x):\n    return 2 * x + 1\n"
    assert _scored(good, HE_FAILING).passed
    assert not _scored("def f(x):\n    return 2 * x\n", HE_FAILING).passed


# ----------------------------------------------------------------------------- scoring semantics

CASES = {  # name -> (tests, setup, right solution, wrong solution)
    "tuples are not lists": (
        ["assert f(1) == (1, 2)"], "", "def f(x):\n    return (x, x + 1)", "def f(x):\n    return [x, x + 1]"),
    "dicts with tuple keys, sets, frozensets": (
        ["assert f() == {(1, 2): {3}, 'k': frozenset({4})}"], "",
        "def f():\n    return {(1, 2): {3}, 'k': frozenset([4])}", "def f():\n    return {(1, 2): [3], 'k': {4}}"),
    "floats: nan, -0.0, inf, isclose": (
        ["import math", "assert math.isnan(f()[0]) and math.copysign(1, f()[1]) == -1 and f()[2] == math.inf",
         "assert math.isclose(f()[3], 0.3)"], "",
        "def f():\n    return [float('nan'), -0.0, float('inf'), 0.1 + 0.2]",
        "def f():\n    return [float('nan'), 0.0, float('inf'), 0.1 + 0.2]"),
    "big integers": (
        ["assert f(3, 10000) == 3 ** 10000"], "",
        "def f(a, b):\n    return a ** b", "def f(a, b):\n    return a ** b + 1"),
    "bytes, bytearray, complex, Fraction, Decimal, range": (
        ["from fractions import Fraction", "from decimal import Decimal",
         "assert f() == [b'ab', bytearray(b'c'), 1 + 2j, Fraction(1, 3), Decimal('0.1'), range(0, 6, 2)]"], "",
        "from fractions import Fraction\nfrom decimal import Decimal\n"
        "def f():\n    return [b'ab', bytearray(b'c'), complex(1, 2), Fraction(2, 6), Decimal('0.10'), range(0, 5, 2)]",
        "from fractions import Fraction\n"
        "def f():\n    return [b'ab', bytearray(b'c'), complex(1, 2), Fraction(1, 4), 0.1, range(0, 6, 2)]"),
    "a generator, drained by the checks": (
        ["assert list(f(3)) == [0, 1, 4]", "assert sorted(f(2)) == [0, 1]"], "",
        "def f(n):\n    return (i * i for i in range(n))", "def f(n):\n    return map(abs, range(n))"),
    "collections as their plain types": (
        ["assert f()[:3] == [(1, 2), {'a': 2}, {'b': 1}] and list(f()[3]) == [3]"], "",
        "import collections\nP = collections.namedtuple('P', 'x y')\n"
        "def f():\n"
        "    return [P(1, 2), collections.Counter('aa'), collections.OrderedDict(b=1), collections.deque([3])]",
        "def f():\n    return [(1, 2), {'a': 1}, {'b': 1}, (3,)]"),
    "an expected exception keeps its type": (
        ["try:\n    f(-1)\nexcept ValueError:\n    pass\nelse:\n    assert False", "assert f(4) == 2"], "",
        "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return int(x ** 0.5)",
        "def f(x):\n    return int(abs(x) ** 0.5)"),
    "the solution's objects, built by the setup code": (
        ["assert is_balanced(root) == False", "assert is_balanced(root1) == True", "assert size(root) == 4"],
        "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\nroot.left.left.left = Node(4)\n"
        "root1 = Node(1)\nroot1.left = Node(2)\nroot1.right = Node(3)\n",
        "class Node:\n    def __init__(self, v):\n        self.v, self.left, self.right = v, None, None\n"
        "def h(n):\n    return 0 if n is None else 1 + max(h(n.left), h(n.right))\n"
        "def is_balanced(n):\n    return n is None or (abs(h(n.left) - h(n.right)) <= 1 and is_balanced(n.left) "
        "and is_balanced(n.right))\n"
        "def size(n):\n    return 0 if n is None else 1 + size(n.left) + size(n.right)",
        "class Node:\n    def __init__(self, v):\n        self.v, self.left, self.right = v, None, None\n"
        "def is_balanced(n):\n    return True\ndef size(n):\n    return 4"),
    "a module the solution imported, used by the checks": (
        ["assert math.isclose(f(2), 1.4142135623730951)"], "",
        "import math\ndef f(x):\n    return math.sqrt(x)", "import math\ndef f(x):\n    return x / 2 + 0.4"),
    "keywords, state across calls, attributes of a returned object": (
        ["c = Counter(start=5)", "assert c.bump() == 6 and c.bump() == 7", "assert c.value == 7"], "",
        "class Counter:\n    def __init__(self, start=0):\n        self.value = start\n"
        "    def bump(self):\n        self.value += 1\n        return self.value",
        "class Counter:\n    def __init__(self, start=0):\n        self.value = start\n"
        "    def bump(self):\n        return self.value + 1"),
    "a function that shadows a built-in is the function under test (MBPP 126)": (
        ["assert sum(10, 15) == 6", "assert sum(4, 6) == 3"], "",
        "def sum(a, b):\n    s = 0\n    for i in range(1, min(a, b)):\n        if a % i == 0 and b % i == 0:\n"
        "            s += i\n    return s",
        "def sum(a, b):\n    return a + b"),
    "threads inside the solution": (
        ["assert f([1, 2, 3]) == [1, 4, 9]"], "",
        "import concurrent.futures as cf\ndef f(xs):\n    with cf.ThreadPoolExecutor(3) as p:\n"
        "        return list(p.map(lambda x: x * x, xs))",
        "def f(xs):\n    return [x * 2 for x in xs]"),
}


def _single_process_passes(script: str) -> bool:
    """Whether the whole program, run in one interpreter as the benchmark defines it, passes (the oracle)."""
    try:
        exec(compile(script, "script", "exec"), {"__name__": "__main__"})
    except Exception:
        return False
    return True


def test_right_solutions_pass_and_wrong_ones_fail_across_the_pipe():
    """The checks see the solution's return values as plain data with the same ``==`` the single-process
    program had: every right solution passes and every wrong one (which differs in a value's type or
    content) fails, as they do when the whole program runs in one interpreter."""
    programs, names = [], []
    for name, (tests, setup, right, wrong) in CASES.items():
        for sol, ok in ((right, True), (wrong, False)):
            program = metrics.code_program(f"```python\n{sol}\n```", _mbpp(tests, setup))
            assert _single_process_passes(program.script) is ok, (name, ok)  # the case itself is right
            programs.append(program)
            names.append(name)
    results = run_many(programs, timeout=15)
    got = {(n, i % 2): r for i, (n, r) in enumerate(zip(names, results))}
    bad = [(n, "right" if k == 0 else "wrong", r.status, r.stderr[-300:]) for (n, k), r in got.items()
           if r.passed != (k == 0)]
    assert not bad, bad


def test_solution_output_comes_back_and_a_failing_check_says_which():
    r = _scored("def f(x):\n    print('called with', x)\n    return 0", HE_FAILING)
    assert not r.passed and r.status == "failed"
    assert r.stdout == "called with 2"
    assert "assert candidate(2) == 5" in r.stderr and "AssertionError" in r.stderr


def test_the_codec_round_trips_plain_data_and_refuses_the_rest():
    import collections
    import decimal
    import fractions

    from text2lora.eval._sandbox_runner import ProtocolError, decode, encode

    values = [None, True, 0, -(10 ** 50), 1.5, float("inf"), "\ud800 ok", b"\x00", bytearray(b"z"), 1j,
              (1, [2, {3: (4,)}]), {frozenset({1}): {"a"}}, range(2, 9, 3), fractions.Fraction(3, 7),
              decimal.Decimal("1.10"), collections.deque([1])]
    for v in values:
        back = decode(json.loads(json.dumps(encode(v, None))), None)
        assert back == v and type(back) is type(v), (v, back)
    for bad in ({"a": 1}, ["eval", "x"], ["dict", [1]], ["set", ["list"]], ["ref", "1"], ["bytes", "zz"], [],
                ["tuple", {"x": 1}]):
        with pytest.raises(ProtocolError):
            decode(bad, lambda i: i)
    nested = 1
    for _ in range(500):
        nested = ["list", nested]
    with pytest.raises(ProtocolError):
        decode(nested, None)
    with pytest.raises(TypeError, match="only plain data"):
        encode(object(), None)


# ----------------------------------------------------------------------------- the same probes, unprivileged

PROBE_ENV = "T2L_SANDBOX_PROBE_UID"

# Run as root inside `unshare --mount --propagation private`: make the given host paths reachable by any uid
# in this mount namespace only (a tmpfs over each non-traversable ancestor, the paths bound back into it),
# then run the command as the probe uid with no capabilities and a minimal environment.
_AS_USER = r'''
import json, os, subprocess, sys, tempfile
spec = json.loads(sys.argv[1])
paths = sorted(set(spec["reach"]))
paths = [p for p in paths if not any(p.startswith(q + "/") for q in paths)]
blocked = {}
for p in paths:
    parts = p.split("/")[1:]
    for i in range(1, len(parts)):
        a = "/" + "/".join(parts[:i])
        if not os.stat(a).st_mode & 0o001:
            blocked.setdefault(a, []).append(p)
            break
for a, inside in blocked.items():
    stage = tempfile.mkdtemp()
    for j, p in enumerate(inside):
        os.mkdir(f"{stage}/{j}")
        subprocess.run(["mount", "--rbind", p, f"{stage}/{j}"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", a], check=True)
    for j, p in enumerate(inside):
        os.makedirs(p, exist_ok=True)
        subprocess.run(["mount", "--move", f"{stage}/{j}", p], check=True)
uid = str(spec["uid"])
os.execvpe("setpriv", ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                       "--bounding-set=-all", *spec["cmd"]], spec["env"])
'''


def _free_uid() -> int:
    """A uid that no account and no running process has."""
    used = {os.stat(f"/proc/{d}").st_uid for d in os.listdir("/proc") if d.isdigit() and os.path.exists(f"/proc/{d}")}
    for uid in range(61000, 65000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in used:
                return uid
    raise AssertionError("no free uid between 61000 and 65000")


def _as_user(uid: int, cmd: list[str], env: dict, reach: list[str], timeout: float) -> subprocess.CompletedProcess:
    spec = {"uid": uid, "cmd": cmd, "env": env, "reach": reach}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _AS_USER,
                           json.dumps(spec)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_the_probes_hold_as_an_unprivileged_user():
    """CI runs as root, where the runner drops privileges itself; an ordinary user's sandbox is made
    differently (a user namespace, no setuid). Run every probe of this module and of tests/test_sandbox.py
    again as a fresh unprivileged uid, with no capabilities and the evaluator's environment stripped."""
    if os.geteuid() != 0:
        pytest.skip(f"this run is already unprivileged (uid {os.geteuid()}): every probe above ran as it")
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` (util-linux) is needed to run the probes as another user")
    import text2lora

    uid = _free_uid()
    repo = Path(__file__).resolve().parents[1]
    src = Path(text2lora.__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="t2l-probe-"))
    try:
        os.chown(work, uid, uid)
        work.chmod(0o700)
        reach = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                     os.path.dirname(os.path.realpath(sys.executable)))}
                       | {str(repo), str(src), str(work)})
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "USER": "t2l-probe",
               "LANG": "C.UTF-8", "PYTHONPATH": str(src), PROBE_ENV: str(uid), "PYTHONDONTWRITEBYTECODE": "1"}
        bwrap = shutil.which("bwrap") or "bwrap"
        check = _as_user(uid, [bwrap, "--unshare-user", "--ro-bind", "/", "/", "true"], env, reach, 60)
        if check.returncode != 0:
            pytest.skip(f"the kernel refuses an unprivileged user namespace here, so an ordinary user cannot run "
                        f"the sandbox at all: {check.stderr.strip()[-200:]}")
        py = os.path.realpath(sys.executable)
        r = _as_user(uid, [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={work}/pytest",
                           "--rootdir", str(repo), "-k", "not unprivileged_user",
                           str(repo / "tests" / "test_sandbox.py"), str(Path(__file__).resolve())],
                     env, reach, 900)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0, f"as uid {uid}:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    assert re.fullmatch(r"\d+ passed(, \d+ deselected)? in .*", summary), summary


# ----------------------------------------------------------------------------- the real benchmarks

# Runs each program in a fresh namespace of one child interpreter (the benchmark's own single-file
# semantics) and reports which passed.
_ONE_INTERPRETER = """
import json, sys
passed = []
for program in json.load(sys.stdin):
    try:
        exec(compile(program, "program", "exec"), {"__name__": "__main__"})
        passed.append(True)
    except BaseException:
        passed.append(False)
print(json.dumps(passed))
"""


def _stub(example) -> str:
    """A completion that defines what the reference defines, returning None from every function."""
    if "entry_point" in example.meta:
        return "    return None\n"  # the body continuing the prompt's entry point
    names = re.findall(r"^(?:def|class)\s+(\w+)", example.response, re.M)
    return "\n".join(f"def {n}(*args, **kwargs):\n    return None\n" for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_the_sandbox_scores_wrong_solutions_as_one_interpreter_does(name):
    """Every test problem of the benchmark (``t2l data fetch benchmarks``) with a solution that returns None:
    the two-container verdict equals the single-interpreter one (the slow reference-solution test in
    test_eval_metrics.py shows the same for the right solutions)."""
    from text2lora.data import get_task

    exs = get_task(name).splits["test"]
    programs = [metrics.code_program(f"```python\n{_stub(e)}\n```", e) for e in exs]
    out = subprocess.run([sys.executable, "-c", _ONE_INTERPRETER], input=json.dumps([p.script for p in programs]),
                         capture_output=True, text=True, timeout=600)
    expected = json.loads(out.stdout.strip().splitlines()[-1])
    got = [r.passed for r in run_many(programs, timeout=20)]
    differ = [(e.meta["task_id"], want) for e, want, have in zip(exs, expected, got) if want != have]
    assert not differ, differ
    assert sum(expected) < len(exs) // 20  # the stubs fail almost everywhere: the checks are not vacuous
