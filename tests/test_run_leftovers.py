"""A failed start leaves nothing behind; a kill mid-write leaves nothing that breaks the next start; what
text2lora writes has the user's umask; pickled weights are refused in one line."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from text2lora.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_SFT = ROOT / "configs" / "tiny_sft.yaml"
TINY_TASKS = ROOT / "configs" / "data" / "tiny_tasks.jsonl"


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TEXT2LORA_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _t2l(tmp: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "text2lora.cli", *argv], cwd=tmp, env=_env(tmp),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from text2lora.testing import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("leftovers") / "tiny")


# ----------------------------------------------------------------------------- failed starts

def test_failed_train_start_leaves_nothing_and_the_retry_runs(tiny_dir, tmp_path):
    out = tmp_path / "runs" / "sft"
    args = ["train", "sft", str(TINY_SFT), "--base", str(tiny_dir), "--latent-dim", "16", "--head-in", "32",
            "--quiet", "--device", "cpu", "--out", str(out)]
    proc = _t2l(tmp_path, *args, "--tasks", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2, proc.stderr
    assert "missing.jsonl" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not out.parent.exists()  # the run directory and the runs/ it made
    # the corrected command is not refused with "already exists; pass --resume"
    assert main(args + ["--tasks", str(TINY_TASKS), "--steps", "1"]) == 0
    assert (out / "config.yaml").is_file() and (out / "best").is_dir()


def test_failed_start_in_an_existing_directory_removes_only_what_it_wrote(tmp_path, capsys):
    from text2lora.train.config import load_config
    from text2lora.train.run import RunDir

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "sft", str(TINY_SFT), "--tasks", str(tmp_path / "missing.jsonl"), "--out", str(empty)]) == 2
    assert empty.is_dir() and not any(empty.iterdir())  # the user's (empty) directory stays, empty

    # a run that existed before (config.yaml from an earlier start) keeps its config.yaml on a failed resume
    cfg = load_config("sft", TINY_SFT)
    RunDir.open(tmp_path / "old", cfg)
    before = (tmp_path / "old" / "config.yaml").read_bytes()
    assert main(["train", "sft", str(TINY_SFT), "--out", str(tmp_path / "old"), "--resume", "--tasks",
                 str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert (tmp_path / "old" / "config.yaml").read_bytes() != b"" and sorted(
        p.name for p in (tmp_path / "old").iterdir()) == ["config.yaml"]
    assert before  # written by the earlier start, not by this one


def test_failed_eval_start_leaves_nothing_and_the_retry_with_other_settings_runs(tiny_dir, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"name": "echo", "descriptions": ["Repeat the word."],
                                 "train": [{"input": "Say dog", "output": "dog"}],
                                 "test": [{"input": "Say cat", "output": "cat"}]}) + "\n")
    notgen = tmp_path / "notgen"
    notgen.mkdir()  # exists, so the condition parses; the condition fails (the task has no held-out
    # description for a generator to read, and this is no generator) after run.json is written
    out = tmp_path / "ev"
    common = ["eval", "--base", str(tiny_dir), "--benchmarks", str(tasks), "--out", str(out), "--quiet",
              "--max-new-tokens", "2", "--device", "cpu"]
    proc = _t2l(tmp_path, *common, "--conditions", f"t2l:{notgen}", "--shots", "5")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()
    # other pinned settings (--shots) and a working condition: not refused as "made with different settings"
    proc = _t2l(tmp_path, *common, "--conditions", "base", "--shots", "3")
    assert proc.returncode == 0, proc.stderr
    assert (out / "results.json").is_file() and json.loads((out / "run.json").read_text())["pinned"]["shots"] == 3


# ----------------------------------------------------------------------------- kills mid-write

def test_stale_temporaries_of_a_killed_checkpoint_write_are_removed_on_resume(tmp_path):
    from text2lora.train.config import load_config
    from text2lora.train.run import RunDir

    cfg = load_config("sft", TINY_SFT)
    run = RunDir.open(tmp_path / "run", cfg)
    (run.checkpoint_root / "step-000002").mkdir(parents=True)
    (run.checkpoint_root / "step-000002" / "state.json").write_text("{}")
    (run.path / "notes.txt").write_text("mine")
    # a process killed (SIGKILL) in the middle of writing checkpoint step 4 and a file of the run
    script = textwrap.dedent(f"""
        import sys, time
        from text2lora._io import atomic_dir, atomic_file
        with atomic_dir({str(run.checkpoint_root / 'step-000004')!r}, force=True) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            with atomic_file({str(run.path / 'metrics.csv')!r}) as f:
                open(f, "w").write("step")
                print("writing", flush=True)
                time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    stale = sorted(p.name for p in run.checkpoint_root.iterdir() if p.name.startswith("."))
    stale += sorted(p.name for p in run.path.iterdir() if p.name.startswith("."))
    assert len(stale) == 2 and all(s.endswith(".tmp") for s in stale), stale
    assert [p.name for p in run.checkpoints()] == ["step-000002"]  # the torn one never counted

    RunDir.open(tmp_path / "run", cfg, resume=True)
    assert sorted(p.name for p in run.checkpoint_root.iterdir()) == ["step-000002"]
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoints", "config.yaml", "notes.txt"]


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    from text2lora.train.config import load_config
    from text2lora.train.run import RunDir

    cfg = load_config("sft", TINY_SFT)
    run = RunDir.open(tmp_path / "run", cfg)
    run.log(1, "train", {"loss": 2.5})
    run.log(2, "train", {"loss": 2.25})
    run.log(3, "train", {"loss": 2.0})
    data = run.metrics_path.read_bytes()
    run.metrics_path.write_bytes(data[: data.rindex(b"2.0") + 1])  # killed while appending step 3: "3,train,loss,2"
    resumed = RunDir.open(tmp_path / "run", cfg, resume=True)
    with pytest.warns(UserWarning, match="torn"):  # the resume says what it dropped
        resumed.truncate_metrics(3)  # what the loop does on resume (the checkpoint was step 3 here)
    assert resumed.read_metrics("train", "loss") == [(1, "train", "loss", 2.5), (2, "train", "loss", 2.25)]
    assert run.metrics_path.read_bytes().endswith(b"\n")
    resumed.log(3, "train", {"loss": 2.0})  # appended on a line of its own
    assert [r[3] for r in resumed.read_metrics()] == [2.5, 2.25, 2.0]
    resumed.plot()  # used to crash on the torn row (float(None))


def test_read_metrics_skips_a_torn_line_even_without_resume(tmp_path):
    from text2lora.train.config import load_config
    from text2lora.train.run import RunDir

    run = RunDir.open(tmp_path / "run", load_config("sft", TINY_SFT))
    run.log(1, "train", {"loss": 1.5})
    with open(run.metrics_path, "a") as f:
        f.write("2,tra")
    assert run.read_metrics() == [(1, "train", "loss", 1.5)]
    run.plot()


# ----------------------------------------------------------------------------- permissions

def _modes(root: Path) -> set[tuple[str, int]]:
    return {("d" if p.is_dir() else "f", stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask,dirs,files", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640), (0o002, 0o775, 0o664)])
def test_written_files_follow_the_umask(umask, dirs, files, tmp_path, tiny_llama):
    from conftest import random_adapter
    from text2lora import TextToLoRA
    from text2lora._io import atomic_write_text
    from text2lora.train.config import load_config
    from text2lora.train.run import RunDir

    old = os.umask(umask)
    try:
        random_adapter(tiny_llama.spec).save(tmp_path / "adapter")
        TextToLoRA.init(tiny_llama, latent_dim=8, head_in=16).save_pretrained(tmp_path / "gen")
        RunDir.open(tmp_path / "run", load_config("sft", TINY_SFT))
        atomic_write_text(tmp_path / "file.txt", "x")
    finally:
        os.umask(old)
    for what in ("adapter", "gen", "run"):
        assert _modes(tmp_path / what) == {("d", dirs), ("f", files)}, what
    assert stat.S_IMODE((tmp_path / "file.txt").stat().st_mode) == files


# ----------------------------------------------------------------------------- pickled weights

def _pickle_weights(folder: Path) -> None:
    """Replace ``model.safetensors`` by the same tensors in a pickled ``pytorch_model.bin``."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def test_pickled_base_model_is_refused_in_one_line(tiny_dir, tmp_path):
    import shutil

    base = tmp_path / "pickled"
    shutil.copytree(tiny_dir, base)
    _pickle_weights(base)
    proc = _t2l(tmp_path, "info", "--base", str(base))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert str(base / "pytorch_model.bin") in lines[0] and "safetensors" in lines[0]
    assert "Unpickling" not in proc.stderr and "Traceback" not in proc.stderr


def test_pickled_encoder_is_refused_naming_the_file(tmp_path):
    import shutil

    from text2lora.encoders import _embedded_encoder_path, load_encoder
    from text2lora.errors import ModelLoadError

    enc = tmp_path / "encoder"
    shutil.copytree(_embedded_encoder_path("all-minilm-l6-v2"), enc)
    _pickle_weights(enc)
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin.*safetensors"):
        load_encoder(str(enc))
