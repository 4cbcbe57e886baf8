"""Bad files and paths get one line naming the file or field (CLI exit 2, no traceback), checked before
anything big is allocated; ``--force`` replaces only what text2lora wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from _serve_utils import tiny_generator
from text2lora.cli import main
from text2lora.errors import AdapterError, CheckpointError, OutputExistsError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("errs")
    tiny_generator(root)
    return root / "gen"


@pytest.fixture
def copy(ckpt, tmp_path):
    dst = tmp_path / "gen"
    shutil.copytree(ckpt, dst)
    return dst


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


def _one_line_error(rc: int, err: str, *must: str) -> None:
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("t2l: error:") and "Traceback" not in err, err
    for m in must:
        assert m in lines[0], lines[0]


def _edit_config(d: Path, edit) -> None:
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(edit(cfg)))


@pytest.mark.parametrize("name,edit,expect", [
    ("config is a list", lambda c: [c], "not an object"),
    ("hyper is a list", lambda c: {**c, "hyper": [1]}, "'hyper'"),
    ("base is a string", lambda c: {**c, "base": "x"}, "'base'"),
    ("latent_dim 1e7", lambda c: {**c, "hyper": {**c["hyper"], "latent_dim": 1e7}}, "latent_dim"),
    ("huge latent_dim", lambda c: {**c, "hyper": {**c["hyper"], "latent_dim": 4_000_000}}, "config.json"),
    ("huge hidden size", lambda c: {**c, "base": {**c["base"], "modules": [
        {**m, "in_features": 10**9, "out_features": 10**9} for m in c["base"]["modules"]]}}, "config.json"),
    ("absurd layer count", lambda c: {**c, "base": {**c["base"], "num_layers": 10**12}}, "config.json"),
    ("negative width", lambda c: {**c, "hyper": {**c["hyper"], "head_in": -5}}, "head_in"),
])
def test_bad_checkpoint_configs_are_one_line_errors(copy, capsys, name, edit, expect):
    from text2lora import TextToLoRA

    _edit_config(copy, edit)
    with pytest.raises(CheckpointError, match="config.json") as e:
        TextToLoRA.from_pretrained(copy)
    assert expect in str(e.value)
    _one_line_error(*_cli(capsys, "info", str(copy)), "config.json")


def test_bad_checkpoint_is_refused_by_serve_before_loading_a_base(copy):
    from text2lora.serve.engine import load_engine

    _edit_config(copy, lambda c: [c])
    with pytest.raises(CheckpointError, match="not an object"):
        load_engine(str(copy))


@pytest.mark.parametrize("change,expect", [
    ("shape", "shape"),
    ("int64", "I64"),
    ("missing", "has no tensor"),
])
def test_weights_that_do_not_match_the_config_are_named(copy, capsys, change, expect):
    from text2lora import TextToLoRA

    w = copy / "model.safetensors"
    state = load_file(str(w))
    key = next(k for k, v in state.items() if v.dim() == 2 and not k.startswith("z"))
    if change == "shape":
        state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    elif change == "int64":
        state[key] = state[key].to(torch.int64)
    else:
        del state[key]
    save_file(state, str(w))
    with pytest.raises(CheckpointError, match=expect) as e:
        TextToLoRA.from_pretrained(copy)
    assert key in str(e.value)
    _one_line_error(*_cli(capsys, "info", str(copy)), key)


def test_adapter_config_that_is_a_list(ckpt, tmp_path):
    from text2lora import LoRAAdapter, TextToLoRA

    d = tmp_path / "ad"
    TextToLoRA.from_pretrained(ckpt).generate("Count the words.").save(d, vllm=False)
    (d / "adapter_config.json").write_text("[]")
    with pytest.raises(AdapterError, match="adapter_config.json"):
        LoRAAdapter.load(d)
    (d / "adapter_config.json").write_text("{}")
    (d / "text2lora.json").write_text('"just a string"')
    with pytest.raises(AdapterError, match="text2lora.json"):
        LoRAAdapter.load(d)


# ----------------------------------------------------------------------------- --out and --force

def test_force_replaces_only_what_t2l_wrote(ckpt, tmp_path, capsys, monkeypatch):
    own = tmp_path / "lora"
    assert _cli(capsys, "generate", "--model", str(ckpt), "Count words.", "--out", str(own), "--quiet")[0] == 0
    assert _cli(capsys, "generate", "--model", str(ckpt), "Count letters.", "--out", str(own), "--quiet", "--force")[0] == 0
    assert json.loads((own / "text2lora.json").read_text())["description"] == "Count letters."
    # an unrelated directory with the user's files is refused, untouched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    _one_line_error(*_cli(capsys, "generate", "--model", str(ckpt), "x y", "--out", str(mine), "--force"),
                    "did not write", "thesis.tex")
    assert (mine / "thesis.tex").read_text() == "years of work"
    # nor the current directory
    monkeypatch.chdir(mine)
    _one_line_error(*_cli(capsys, "generate", "--model", str(ckpt), "x y", "--out", ".", "--force"),
                    "did not write", "thesis.tex")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    # an empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli(capsys, "generate", "--model", str(ckpt), "x y", "--out", str(empty), "--quiet", "--force")[0] == 0
    # a generator checkpoint written by t2l init may be replaced by t2l init --force
    gen_copy = tmp_path / "gen"
    shutil.copytree(ckpt, gen_copy)
    from text2lora._io import check_replaceable, written_by_t2l

    assert written_by_t2l(gen_copy) and written_by_t2l(own) and not written_by_t2l(mine)
    check_replaceable(gen_copy)
    with pytest.raises(OutputExistsError):
        check_replaceable(mine)


@pytest.mark.parametrize("out", ["afile.txt/lora", "/proc/t2l-x"])
def test_unwritable_out_is_a_one_line_error(ckpt, tmp_path, capsys, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("a file, not a directory")
    _one_line_error(*_cli(capsys, "generate", "--model", str(ckpt), "Count words.", "--out", out), "cannot write")


# ----------------------------------------------------------------------------- bytes that are not UTF-8

def _run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "text2lora.cli", *argv], capture_output=True, timeout=300)


def _one_line_exit_2(proc: subprocess.CompletedProcess, *must: str) -> None:
    err = proc.stderr.decode("utf-8", "replace")
    _one_line_error(proc.returncode, err, *must)


@pytest.mark.parametrize("arg, shown", [(b"A \xff", "A \\xff"), (b"caf\xe9 au lait", "caf\\xe9 au lait")])
def test_an_argument_that_is_not_utf8_is_one_line(ckpt, tmp_path, arg, shown):
    """`t2l generate $'A \\xff'`: exit 2, one line naming the argument and the fix; nothing written."""
    proc = _run(b"generate", b"--model", str(ckpt).encode(), arg, b"--out", str(tmp_path / "x").encode())
    _one_line_exit_2(proc, f'argument 4 ("{shown}")', "not UTF-8", "LANG=C.UTF-8")
    assert not (tmp_path / "x").exists()
    proc = _run(b"chat", b"--model", str(ckpt).encode(), b"--message", arg)  # before anything loads
    _one_line_exit_2(proc, "argument 5", "not UTF-8")


@pytest.mark.parametrize("content, line", [
    (b"Count words.\n\xed\xb2\x80 a lone surrogate, UTF-8 encoded\n", 2),  # what a surrogate becomes in bytes
    (b"Sort words.\nAnswer in fran\xe7ais.\n", 2),  # Latin-1
    (b"\xff\xfeC\x00o\x00u\x00n\x00t\x00", 1),  # UTF-16
])
def test_a_description_file_that_is_not_utf8_is_one_line(ckpt, tmp_path, content, line):
    descs = tmp_path / "d.txt"
    descs.write_bytes(content)
    proc = _run(b"generate", b"--model", str(ckpt).encode(), b"--file", str(descs).encode(), b"--out",
                str(tmp_path / "x").encode())
    _one_line_exit_2(proc, f"--file {descs} is not UTF-8 text: line {line}", "save the file as UTF-8")
    assert not (tmp_path / "x").exists()


def test_a_lone_surrogate_in_a_description_is_refused_by_the_library(ckpt):
    """A description that reached Python with a lone surrogate (a JSON escape \\udcff) is a ConfigError naming
    it, from the one description check (the server and the generator use it too)."""
    from text2lora import TextToLoRA
    from text2lora.errors import ConfigError

    with pytest.raises(ConfigError, match=r"description 2 holds a lone surrogate \(\\udcff\)"):
        TextToLoRA.from_pretrained(ckpt).generate(["Count words.", "A \udcff"])
