"""Ctrl-C anywhere in ``t2l`` exits 130 with one line and no traceback; a user error is one line (exit 2) and
``-v`` adds its traceback; any other exception is a bug and keeps its traceback. Real processes, real SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _serve_utils import tiny_generator
from text2lora.cli import main

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches /proc/<pid>/maps")


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sigint")
    tiny_generator(root, context=100_000)  # long context: a chat reply can stream for a long time
    return root / "gen"


def _start(tmp: Path, *argv: str) -> subprocess.Popen:
    env = {**os.environ, "TEXT2LORA_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # a job started in the background of a non-interactive shell inherits SIGINT ignored: restore the default so
    # the child installs Python's handler, as a `t2l` typed at a terminal does
    return subprocess.Popen([sys.executable, "-m", "text2lora.cli", *argv], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_library(proc: subprocess.Popen, name: str, timeout: float = 300) -> None:
    """Wait until the process has mapped a shared library whose path contains ``name`` (it is importing it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            if name in Path(f"/proc/{proc.pid}/maps").read_text():
                return
        except OSError:
            pass
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"{name} never loaded")


def _assert_interrupted(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    err = err.decode(errors="replace")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "terminate called" not in err and "KeyboardInterrupt" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1] == "t2l: interrupted", err
    assert sum("interrupted" in ln for ln in lines) == 1, err
    return err


@pytest.mark.parametrize("argv", [
    ["generate", "--model", "{gen}", "Answer questions.", "--out", "{tmp}/out"],
    ["chat", "--model", "{gen}", "--message", "hi"],
])
def test_ctrl_c_during_start_up(argv, gen_dir, tmp_path):
    """SIGINT while torch is being imported (start-up): 130, one line; nothing written."""
    proc = _start(tmp_path, *[a.format(gen=gen_dir, tmp=tmp_path) for a in argv])
    _wait_for_library(proc, "libtorch")
    proc.send_signal(signal.SIGINT)
    _assert_interrupted(proc)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_chat_streams(gen_dir, tmp_path):
    """SIGINT while `t2l chat` prints a reply token by token: the generation thread stops, the process exits
    130 with one line (it used to abort: 'terminate called without an active exception', exit 134)."""
    proc = _start(tmp_path, "chat", "--model", str(gen_dir), "--description", "Answer questions.",
                  "--message", "hi", "--max-new-tokens", "50000")
    first = proc.stdout.read(1)  # blocks until the reply starts streaming
    assert first, proc.communicate()
    time.sleep(0.2)
    assert proc.poll() is None, "the reply ended before the interrupt"
    proc.send_signal(signal.SIGINT)
    _assert_interrupted(proc)


def test_user_error_is_one_line_and_verbose_shows_traceback(tmp_path):
    missing = str(tmp_path / "missing")
    proc = subprocess.run([sys.executable, "-m", "text2lora.cli", "info", missing], capture_output=True, text=True,
                          timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("t2l: error:"), proc.stderr
    assert missing in lines[0]
    proc = subprocess.run([sys.executable, "-m", "text2lora.cli", "-v", "info", missing], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" in proc.stderr and "CheckpointError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("t2l: error:")


def test_other_exceptions_are_bugs_not_user_errors(monkeypatch, tmp_path):
    """A ValueError that is not a T2LError is not reported as bad input: it propagates (a traceback)."""
    from text2lora.generator import TextToLoRA

    def broken(*a, **k):
        raise ValueError("an internal bug")

    monkeypatch.setattr(TextToLoRA, "from_pretrained", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["info", str(tmp_path)])
    with pytest.raises(ZeroDivisionError):
        monkeypatch.setattr(TextToLoRA, "from_pretrained", lambda *a, **k: 1 / 0)
        main(["info", str(tmp_path)])


def test_keyboard_interrupt_in_train_and_eval_is_130(monkeypatch, capsys, tmp_path):
    """Ctrl-C inside train or eval (here raised where their work starts) is one line and exit 130."""
    import text2lora.eval.runner as runner
    import text2lora.train.sft as sft

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sft, "train_sft", interrupted)
    monkeypatch.setattr(runner, "resolve_eval_tasks", interrupted)  # where `t2l eval run` starts its work
    root = Path(__file__).resolve().parents[1]
    assert main(["train", "sft", str(root / "configs" / "tiny_sft.yaml"), "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "t2l: interrupted"
    assert main(["eval", "--benchmarks", "arc_easy", "--conditions", "base", "--out", str(tmp_path / "ev")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "t2l: interrupted"
    assert not (tmp_path / "run").exists() and not (tmp_path / "ev").exists()
