"""The t2l command: --help of every subcommand, generate/init/info/chat, and bad input -> exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from text2lora.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_subcommand_has_help(capsys):
    for name, sub in _subcommands().items():
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: t2l {name}") and len(out) > 80, name
        assert sub.description or sub.format_help()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from text2lora.testing import save_tiny_base

    root = tmp_path_factory.mktemp("cli")
    base_dir = save_tiny_base(root / "tiny-llama")
    assert main(["init", "--base", str(base_dir), "--out", str(root / "gen"), "--latent-dim", "16",
                 "--head-in", "32", "--quiet"]) == 0
    return root / "gen"


def test_generate_one_and_many(tmp_path, tiny_ckpt, capsys):
    assert main(["generate", "--model", str(tiny_ckpt), "Sort a list of words.", "--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "adapter_model.safetensors").is_file()
    prov = json.loads((tmp_path / "one" / "text2lora.json").read_text())
    assert prov["description"] == "Sort a list of words." and len(prov["generator_digest"]) == 64
    descs = tmp_path / "d.txt"
    descs.write_text("Add two numbers.\n\nTranslate to French.\nAnswer yes or no.\n")
    assert main(["generate", "--model", str(tiny_ckpt), "--file", str(descs), "--out", str(tmp_path / "many")]) == 0
    index = json.loads((tmp_path / "many" / "index.json").read_text())
    assert [i["description"] for i in index] == ["Add two numbers.", "Translate to French.", "Answer yes or no."]
    for i in index:
        assert (tmp_path / "many" / i["dir"] / "adapter_config.json").is_file()


def test_info_and_init_output(tiny_ckpt, capsys):
    assert main(["info", str(tiny_ckpt)]) == 0
    out = capsys.readouterr().out
    assert "head size:   M, input width 32" in out and "output heads" in out and "total" in out
    # the checkpoint's head_in (32) is not t2l init's default (512): said, with the ratio of output-head weights
    assert "note:        head_in 32, not the 512 of a fresh `t2l init`: 16x fewer output-head weights" in out

    def heads(text):
        return int(next(ln for ln in text.splitlines() if ln.strip().startswith("output heads")).split()[-1]
                   .replace(",", ""))

    base = str(tiny_ckpt.parent / "tiny-llama")
    assert main(["info", "--base", base, "--head-size", "M", "--head-in", "32"]) == 0
    fresh32 = capsys.readouterr().out
    assert "head M, in 32" in fresh32 and "a 32-wide input" in fresh32 and heads(fresh32) == heads(out)
    assert main(["info", "--base", base, "--head-size", "M"]) == 0
    fresh = capsys.readouterr().out
    assert "head M, in 512" in fresh and heads(fresh) == 16 * heads(out)


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "{ckpt}", "   ", "--out", "{tmp}/x"], "empty"),
    (["generate", "--model", "{ckpt}", "--out", "{tmp}/x"], "no description"),
    (["generate", "--model", "{tmp}/missing", "task", "--out", "{tmp}/x"], "does not exist"),
    (["generate", "--model", "{ckpt}", "task", "--out", "{tmp}"], "already exists"),
    (["init", "--base", "{tmp}/nobase", "--out", "{tmp}/g"], "does not exist"),
    (["init", "--base", "{base}", "--target-modules", "foo_proj", "--out", "{tmp}/g"], "foo_proj match nothing"),
    (["init", "--base", "{base}", "--head-size", "XL", "--out", "{tmp}/g"], "invalid choice"),
    (["info", "{tmp}/missing"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, tiny_ckpt):
    """Run as a real process: exit code 2, a readable message, no traceback."""
    subs = {"ckpt": str(tiny_ckpt), "tmp": str(tmp_path), "base": str(tiny_ckpt.parent / "tiny-llama")}
    argv = [a.format(**subs) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "text2lora.cli", *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "g").exists()


def test_corrupt_checkpoint_and_fake_gguf(tmp_path, tiny_ckpt, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    assert main(["generate", "--model", str(bad), "task", "--out", str(tmp_path / "o")]) == 2
    assert "corrupt" in capsys.readouterr().err
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    assert main(["init", "--base", str(fake), "--out", str(tmp_path / "g")]) == 2
    assert "GGUF" in capsys.readouterr().err


def test_chat_one_message(tiny_ckpt, capsys):
    base = str(tiny_ckpt.parent / "tiny-llama")
    assert main(["chat", "--model", str(tiny_ckpt), "--base", base, "--description", "Say hi.",
                 "--message", "hello", "--max-new-tokens", "5"]) == 0
    captured = capsys.readouterr()
    assert "adapter generated for: Say hi." in captured.err
    # the streamed reply is exactly the greedy reply of the base model under the same adapter
    from text2lora import TextToLoRA, load_base
    from text2lora.chat import chat

    b = load_base(base)
    adapter = TextToLoRA.from_pretrained(tiny_ckpt, base=b).generate("Say hi.")
    assert captured.out == chat(b, "hello", adapter, max_new_tokens=5) + "\n"
    assert len(b.tokenizer(captured.out)["input_ids"]) >= 3


def test_closed_pipe_stops_quietly(tmp_path, monkeypatch, capsys):
    """`t2l data list | head -1`: the reader leaves early; no traceback, the SIGPIPE exit status."""
    sink = open(tmp_path / "sink", "w")

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return sink.fileno()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["data", "list"]) == 141
    assert capsys.readouterr().err == ""
    sink.close()


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unwritable_out_path_exits_2_naming_it(where, tmp_path, tiny_ckpt):
    """An --out the OS refuses (a path under a regular file, a /proc entry) is one line naming it, exit 2."""
    afile = tmp_path / "afile.txt"
    afile.write_text("user data\n")
    out = afile / "lora" if where == "under_a_file" else Path("/proc/t2l-test-out")
    if where == "proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    proc = subprocess.run([sys.executable, "-m", "text2lora.cli", "generate", "--model", str(tiny_ckpt), "task",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "t2l: error:" in proc.stderr
    assert str(out) in proc.stderr or str(out.parent) in proc.stderr
    assert afile.read_text() == "user data\n"  # nothing of the user's touched


def test_chat_engine_flags_are_checked_before_anything_loads(tmp_path, tiny_ckpt, monkeypatch, capsys):
    """--base-gguf without the llama.cpp engine, and the llama.cpp engine without llama-cpp-python: one line
    each, exit 2, saying what to do (no model is loaded first)."""
    import importlib.util

    from text2lora import chat_llama_cpp

    assert main(["chat", "--model", str(tiny_ckpt), "--base-gguf", "x.gguf", "--message", "hi"]) == 2
    assert "--engine llama.cpp" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(chat_llama_cpp.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    assert main(["chat", "--model", str(tiny_ckpt), "--engine", "llama.cpp", "--message", "hi"]) == 2
    err = capsys.readouterr().err
    assert "llama-cpp-python" in err and "T2L_LLAMA_CPP=1" in err and "Traceback" not in err
