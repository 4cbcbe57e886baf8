"""The trusted code that runs first inside each sandbox of :mod:`text2lora.eval.sandbox` (standard library only).

The host copies this file into the sandbox and runs it as ``python -I -S run.py MODE FD... LIMITS...``. It
sets the resource limits (soft and hard), drops root to the sandbox's unprivileged uid, then takes one of two
roles:

- ``solution``: runs the untrusted solution (then the benchmark's setup code) and answers calls on a pipe:
  ``["call", ref, args, kwargs]`` and ``["getattr", ref, name]``, one JSON line each; the answer is
  ``["ok", value]`` or ``["raise", exception name, message]``. Only plain data crosses the pipe.
- ``checks``: runs the benchmark's checks in a second sandbox. The names the solution defined are bound
  to :class:`Remote` proxies (functions, objects) or to the plain data they hold; a call sends its
  arguments to the solution and gets its return value back as plain data (:func:`decode`), so the
  solution's code, objects and interpreter play no part in evaluating an ``assert``. When the checks ran
  to their end this process writes ``passed`` on the verdict pipe, which only it holds.

Plain data is ``None``, ``bool``, ``int``, ``float``, ``str`` and tagged lists for the rest:
``["list"|"tuple"|"set"|"frozenset"|"deque"|"iter", *items]``, ``["dict", [key, value], ...]``,
``["bytes"|"bytearray", hex]``, ``["complex", re, im]``, ``["range", start, stop, step]``,
``["fraction", num, den]``, ``["decimal", text]`` and ``["ref", id]`` for any other object (it stays in the
solution's process; a proxy stands for it). Subclasses travel as their plain base type (a ``namedtuple``
as a ``tuple``, a ``Counter`` as a ``dict``), an iterator as the list of what it yields.
"""

from __future__ import annotations

import ast
import builtins
import collections
import decimal
import fractions
import importlib
import json
import numbers
import os
import resource
import sys
import traceback
import types

MAX_DEPTH = 100
"""Deepest nesting of plain data that crosses the pipe (deeper is an error)."""
MAX_ITEMS = 1_000_000
"""Most items an iterator returned by the solution is drained to."""
MAX_MESSAGE = 64 << 20
"""Longest message (bytes) either side reads."""
MAX_FILES = 64
"""Open file descriptors allowed inside the sandbox."""


class ProtocolError(Exception):
    """A message that is not what the protocol allows."""


class SolutionError(Exception):
    """An exception the solution raised whose type is not a built-in one (its name is in the message)."""


# ----------------------------------------------------------------------------- limits and privileges

def confine(memory: int, cpu: int, fsize: int, nproc: int, uid: int) -> None:
    """Set every limit with soft = hard (an unprivileged process cannot raise a hard limit), then leave root."""
    limits = ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, fsize),
              (resource.RLIMIT_NOFILE, MAX_FILES), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, nproc))
    for kind, value in limits:
        hard = resource.getrlimit(kind)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if 0 in os.getresuid() or 0 in os.getresgid():
        raise SystemExit("the sandbox runner could not leave root")


# ----------------------------------------------------------------------------- plain data

_TAGGED_SEQUENCES = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset,
                     "deque": collections.deque, "iter": lambda items: iter(list(items))}


def encode(x, refs: "RefTable | None", depth: int = 0, drain: bool = True):
    """``x`` as JSON-ready plain data. Objects that are not plain data become ``["ref", id]`` entries of
    ``refs`` (the solution's side); with ``refs=None`` (the checks' side) only :class:`Remote` proxies may
    stand for such objects, anything else is a ``TypeError``. An iterator is drained into its items unless
    ``drain`` is false (then it is an object like any other)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"data nested more than {MAX_DEPTH} deep (or a reference cycle) cannot be sent")
    d = depth + 1
    if x is None or type(x) in (bool, str, int, float):
        return x
    if isinstance(x, Remote):
        return ["ref", object.__getattribute__(x, "_ref")]
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, float):
        return float(x)
    if isinstance(x, complex):
        return ["complex", x.real, x.imag]
    if isinstance(x, fractions.Fraction):
        return ["fraction", x.numerator, x.denominator]
    if isinstance(x, decimal.Decimal):
        return ["decimal", str(x)]
    if isinstance(x, (bytes, bytearray)):
        return ["bytearray" if isinstance(x, bytearray) else "bytes", bytes(x).hex()]
    if isinstance(x, dict):
        return ["dict", *[[encode(k, refs, d, drain), encode(v, refs, d, drain)] for k, v in list(x.items())]]
    if isinstance(x, range):
        return ["range", x.start, x.stop, x.step]
    for tag, kind in (("list", list), ("tuple", tuple), ("set", set), ("frozenset", frozenset),
                      ("deque", collections.deque)):
        if isinstance(x, kind):
            return [tag, *[encode(i, refs, d, drain) for i in list(x)]]
    if drain and hasattr(type(x), "__next__") and hasattr(type(x), "__iter__"):
        items = []
        for item in x:
            if len(items) == MAX_ITEMS:
                raise ValueError(f"an iterator longer than {MAX_ITEMS} items cannot be sent")
            items.append(encode(item, refs, d))
        return ["iter", *items]
    if refs is None:
        raise TypeError(f"a {type(x).__name__} cannot be passed to the solution: only plain data can")
    return ["ref", refs.add(x)]


def decode(x, resolve, depth: int = 0):
    """The value that :func:`encode` made ``x`` from; ``resolve(id)`` gives what a ``["ref", id]`` stands for.
    Anything else is a :class:`ProtocolError`: decoding makes only built-in values (and proxies)."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"data nested more than {MAX_DEPTH} deep")
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if t is not list or not x or type(x[0]) is not str:
        raise ProtocolError(f"not plain data: {str(x)[:80]}")
    tag, items, d = x[0], x[1:], depth + 1
    try:
        if tag in _TAGGED_SEQUENCES:
            return _TAGGED_SEQUENCES[tag](decode(i, resolve, d) for i in items)
        if tag == "dict":
            out = {}
            for pair in items:
                if type(pair) is not list or len(pair) != 2:
                    raise ProtocolError("a dict entry is not a [key, value] pair")
                out[decode(pair[0], resolve, d)] = decode(pair[1], resolve, d)
            return out
        if tag in ("bytes", "bytearray") and len(items) == 1 and type(items[0]) is str:
            return (bytes if tag == "bytes" else bytearray)(bytes.fromhex(items[0]))
        if tag == "complex" and len(items) == 2 and all(type(i) in (int, float) for i in items):
            return complex(*items)
        if tag == "range" and len(items) == 3 and all(type(i) is int for i in items):
            return range(*items)
        if tag == "fraction" and len(items) == 2 and all(type(i) is int for i in items):
            return fractions.Fraction(*items)
        if tag == "decimal" and len(items) == 1 and type(items[0]) is str:
            return decimal.Decimal(items[0])
        if tag == "ref" and len(items) == 1 and type(items[0]) is int:
            return resolve(items[0])
    except (TypeError, ValueError, ZeroDivisionError, decimal.InvalidOperation) as e:
        raise ProtocolError(f"malformed {tag}: {e}") from None
    raise ProtocolError(f"unknown or malformed tag {tag[:40]!r}")


class RefTable:
    """The solution's objects that the checks hold proxies for, by number."""

    def __init__(self):
        self.objects: list = []
        self.ids: dict[int, int] = {}

    def add(self, obj) -> int:
        ref = self.ids.get(id(obj))
        if ref is None:
            ref = self.ids[id(obj)] = len(self.objects)
            self.objects.append(obj)
        return ref

    def get(self, ref: int):
        if not 0 <= ref < len(self.objects):
            raise ProtocolError(f"no object {ref}")
        return self.objects[ref]


class Channel:
    """One JSON message per line over a pair of pipes."""

    def __init__(self, read_fd: int, write_fd: int):
        self.r = os.fdopen(read_fd, "rb", buffering=1 << 16)
        self.w = os.fdopen(write_fd, "wb", buffering=1 << 16)

    def send(self, msg) -> None:
        self.w.write(json.dumps(msg, allow_nan=True).encode() + b"\n")
        self.w.flush()

    def receive(self):
        line = self.r.readline(MAX_MESSAGE + 1)
        if not line:
            raise EOFError
        if not line.endswith(b"\n"):
            raise ProtocolError(f"a message longer than {MAX_MESSAGE} bytes")
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise ProtocolError(f"not JSON: {e}") from None
        if type(msg) is not list or not msg or type(msg[0]) is not str:
            raise ProtocolError("a message is a list that starts with its kind")
        return msg


# ----------------------------------------------------------------------------- the solution's side

def serve_solution(ch: Channel, harness: str) -> int:
    """Run the solution and its setup, announce its names, then answer calls until the checks hang up."""
    refs = RefTable()
    g = {"__name__": "__main__", "__builtins__": builtins}
    parts = []
    for part in ("solution.py", "setup.py"):
        with open(f"{harness}/{part}", encoding="utf-8") as f:
            parts.append((part, f.read()))
    try:
        for part, src in parts:
            exec(compile(src, f"{harness}/{part}", "exec"), g)
    except BaseException:  # SystemExit too: a solution that exits early has defined nothing
        traceback.print_exc()
        return 1
    sys.stdout.flush()
    names = []
    for name, value in list(g.items()):
        if name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            names.append([name, "module", value.__name__])
        else:
            try:
                names.append([name, "value", encode(value, refs, drain=False)])
            except (TypeError, ValueError, RecursionError):
                names.append([name, "value", ["ref", refs.add(value)]])
    ch.send(["hello", names])
    resolve = refs.get
    while True:
        try:
            msg = ch.receive()
        except EOFError:
            return 0
        try:
            if msg[0] == "call" and len(msg) == 4:
                fn = resolve(msg[1])
                args, kwargs = decode(msg[2], resolve), decode(msg[3], resolve)
                if type(args) is not tuple or type(kwargs) is not dict:
                    raise ProtocolError("a call needs a tuple of arguments and a dict of keywords")
                result = fn(*args, **kwargs)
            elif msg[0] == "getattr" and len(msg) == 3 and type(msg[2]) is str:
                result = getattr(resolve(msg[1]), msg[2])
            else:
                raise ProtocolError(f"unknown request {msg[0][:40]!r}")
            reply = ["ok", encode(result, refs)]
        except BaseException as e:  # the checks decide what an exception means
            reply = ["raise", type(e).__name__, str(e)[:2000]]
        sys.stdout.flush()
        ch.send(reply)


# ----------------------------------------------------------------------------- the checks' side

_CHANNEL: Channel | None = None


class Remote:
    """A proxy for an object of the solution: calling it, or reading an attribute, asks the solution's
    process and returns plain data (or another proxy). Proxies are equal only to themselves."""

    __slots__ = ("_ref",)

    def __init__(self, ref: int):
        object.__setattr__(self, "_ref", ref)

    def __call__(self, *args, **kwargs):
        return _request(["call", object.__getattribute__(self, "_ref"), encode(args, None), encode(kwargs, None)])

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _request(["getattr", object.__getattribute__(self, "_ref"), name])

    def __eq__(self, other):
        ref = object.__getattribute__
        return isinstance(other, Remote) and ref(other, "_ref") == ref(self, "_ref")

    def __hash__(self):
        return hash(("remote", object.__getattribute__(self, "_ref")))

    def __repr__(self):
        return f"<object {object.__getattribute__(self, '_ref')} of the solution>"


def _request(msg):
    assert _CHANNEL is not None
    _CHANNEL.send(msg)
    try:
        reply = _CHANNEL.receive()
    except EOFError:
        raise SolutionError("the solution's process ended (it exited, crashed or hit a limit)") from None
    if reply[0] == "ok" and len(reply) == 2:
        return decode(reply[1], Remote)
    if reply[0] == "raise" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
        raise _exception(reply[1], reply[2])
    raise ProtocolError(f"unexpected reply {str(reply)[:80]}")


def _exception(name: str, message: str) -> Exception:
    """The exception the solution raised, rebuilt as the built-in type of that name when there is one."""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except TypeError:  # a built-in whose constructor takes other arguments (UnicodeDecodeError, ...)
            pass
    return SolutionError(f"{name}: {message}")


def bind(names: list, tests: str) -> dict:
    """The checks' globals: what the solution defined, as the checks may see it.

    A module the checks use is imported here, by its name (the checks get the real module, whatever the
    solution did to its own copy). A name of a standard-library module is never bound to anything else.
    A name that shadows a built-in (MBPP 126's function is called ``sum``) is bound only when the checks
    use no other name the solution defined, i.e. when it is the function under test; otherwise the checks
    keep the built-in, so a solution cannot replace ``abs`` or ``isinstance`` inside an ``assert``.
    """
    if type(names) is not list:
        raise ProtocolError("the solution's names are not a list")
    used = {n.id for n in ast.walk(ast.parse(tests)) if isinstance(n, ast.Name)}
    g: dict = {"__name__": "__main__", "__builtins__": builtins}
    values, shadows = {}, {}
    for entry in names:
        if type(entry) is not list or len(entry) != 3 or type(entry[0]) is not str:
            raise ProtocolError("a name entry is [name, kind, data]")
        name, kind, data = entry
        if not name.isidentifier() or name.startswith("__"):
            continue
        if kind == "module" and type(data) is str and name in used and not hasattr(builtins, name):
            try:
                g[name] = importlib.import_module(data)
            except Exception:  # not importable here (a site package): the checks do without it
                pass
        elif kind == "value" and name not in sys.stdlib_module_names:
            (shadows if hasattr(builtins, name) else values)[name] = data
    g.update({n: decode(v, Remote) for n, v in values.items()})
    if not (set(values) & used):
        g.update({n: decode(v, Remote) for n, v in shadows.items()})
    return g


def run_checks(ch: Channel, verdict_fd: int, harness: str) -> int:
    """Wait for the solution's names, run the checks against them, and write the verdict if they all held."""
    global _CHANNEL
    _CHANNEL = ch
    try:
        hello = ch.receive()
    except EOFError:
        print("the solution did not run to its end (an exception, an exit or a limit; its own stderr says which)",
              file=sys.stderr)
        return 1
    if hello[0] != "hello" or len(hello) != 2:
        raise ProtocolError("the solution's first message is not its names")
    with open(f"{harness}/tests.py", encoding="utf-8") as f:
        tests = f.read()
    g = bind(hello[1], tests)
    try:
        exec(compile(tests, f"{harness}/tests.py", "exec"), g)
    except BaseException as e:  # the checks failed: their traceback, from the checks' own frames
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        return 1
    sys.stdout.flush()
    os.write(verdict_fd, b"passed")
    return 0


def main(argv: list[str]) -> int:
    mode = argv[1]
    memory, cpu, fsize, nproc, uid = map(int, argv[-5:])
    fds = list(map(int, argv[2:-5]))
    confine(memory, cpu, fsize, nproc, uid)
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # big integers are plain data too
    harness = os.path.dirname(os.path.abspath(argv[0]))
    sys.argv = [argv[0]]
    if mode == "solution":
        return serve_solution(Channel(fds[0], fds[1]), harness)
    return run_checks(Channel(fds[0], fds[1]), fds[2], harness)


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
