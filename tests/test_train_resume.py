"""Resume after a kill: a run killed with SIGKILL and resumed ends with the same bits as an uninterrupted
one (weights, optimizer, RNG streams, logged values), and metrics.csv lines torn by the kill are reported,
never dropped silently."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from text2lora.errors import T2LWarning

ROOT = Path(__file__).resolve().parents[1]
TINY_SFT = ROOT / "configs" / "tiny_sft.yaml"
TINY_TASKS = ROOT / "configs" / "data" / "tiny_tasks.jsonl"

# the CLI, killed with SIGKILL (no clean-up of any kind) while it appends step 3's metrics: the step-2
# checkpoint is on disk, step 3's rows are written up to half a line
KILLED_CLI = textwrap.dedent("""
    import os, signal, sys
    from text2lora.train.run import RunDir
    real = RunDir.log
    def log(self, step, split, values):
        real(self, step, split, values)
        if step == 3 and split == "train":
            with open(self.metrics_path, "a") as f:
                f.write("3,train,ce,2.7")
            os.kill(os.getpid(), signal.SIGKILL)
    RunDir.log = log
    from text2lora.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_bits(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys(), a.name
    diff = {k: float((ta[k].double() - tb[k].double()).abs().max()) for k in ta if not torch.equal(ta[k], tb[k])}
    assert not diff, f"{a.name} differs: {diff}"


def _logged(run: Path) -> list[tuple[str, str, str, str]]:
    """(step, split, metric, value) of every row but the wall-clock ones."""
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r["split"], r["metric"], r["value"]) for r in csv.DictReader(f)
                if r["metric"] != "step_seconds"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from text2lora.testing import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("resume") / "tiny")


def test_a_run_killed_and_resumed_ends_bit_identical_to_an_uninterrupted_one(tiny_dir, tmp_path):
    """The same ops on the same inputs in the same order give the same bits, so the tolerance is zero:
    weights, AdamW moments, the RNG streams at the end and every logged value (as repr() wrote them).
    The conditioning texts go through the real sentence encoder, whose output for a text moves with the
    other rows of its batch: the resumed run, whose embedding cache starts empty, must not batch them
    differently (what made resumes differ by ~1e-6)."""
    args = ["-m", "text2lora.cli", "train", "sft", str(TINY_SFT), "--base", str(tiny_dir), "--tasks", str(TINY_TASKS),
            "--latent-dim", "16", "--head-in", "32", "--steps", "4", "--save-every", "2", "--eval-every", "2",
            "--device", "cpu", "--quiet"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    done = _run([*args, "--out", str(full)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = _run(["-c", KILLED_CLI, *args[2:], "--out", str(cut)], tmp_path)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [p.name for p in (cut / "checkpoints").iterdir()] == ["step-000002"]
    assert not (cut / "metrics.csv").read_bytes().endswith(b"\n")  # the kill tore the last line

    resumed = _run([*args, "--out", str(cut), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "metrics.csv: dropped line" in resumed.stderr and "'3,train,ce,2.7'" in resumed.stderr  # repaired, said so
    final = Path("checkpoints") / "step-000004"
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        _assert_same_bits(full / final / name, cut / final / name)
    _assert_same_bits(full / "best" / "model.safetensors", cut / "best" / "model.safetensors")
    assert _logged(cut) == _logged(full)
    assert {m for _, _, m, _ in _logged(full)} >= {"loss", "ce", "l2", "grad_norm", "lr"}


# ----------------------------------------------------------------------------- torn metrics.csv lines

def _run_dir(tmp_path: Path):
    from text2lora.train.config import load_config
    from text2lora.train.run import RunDir

    return RunDir.open(tmp_path / "run", load_config("sft", TINY_SFT))


def test_a_torn_line_in_the_middle_is_reported_with_its_file_and_line(tmp_path):
    """Half a row with more rows after it: reading skips it saying where; resuming drops it saying so."""
    run = _run_dir(tmp_path)
    run.log(1, "train", {"loss": 2.5})
    with open(run.metrics_path, "a", newline="") as f:
        f.write("2,train,lo\r\n")  # half a row, then the line end of a later write
    run.log(2, "train", {"loss": 2.25})
    where = re.escape(f"{run.metrics_path}: ")
    with pytest.warns(T2LWarning, match=where + r"skipped line 3 \('2,train,lo'\), not a complete metrics row"):
        assert run.read_metrics() == [(1, "train", "loss", 2.5), (2, "train", "loss", 2.25)]
    with pytest.warns(T2LWarning, match=where + r"dropped line 3 \('2,train,lo'\), torn by an interrupted write, "
                                                r"while resuming from step 2"):
        run.truncate_metrics(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: nothing left to report
        assert run.read_metrics() == [(1, "train", "loss", 2.5), (2, "train", "loss", 2.25)]


def test_rows_appended_after_a_torn_last_line_stay_whole(tmp_path):
    """A kill tears the last line; whatever appends next starts a line of its own, so no row of its is
    lost, and the torn line is reported."""
    run = _run_dir(tmp_path)
    run.log(1, "train", {"loss": 1.5, "lr": 0.1})
    with open(run.metrics_path, "a") as f:
        f.write("2,tra")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unterminated last line may be a write under way: no warning
        assert run.read_metrics("train", "loss") == [(1, "train", "loss", 1.5)]
    run.log(2, "train", {"loss": 1.25, "lr": 0.1})
    with pytest.warns(T2LWarning, match=r"metrics.csv: skipped line 4 \('2,tra'\), not a complete metrics row"):
        assert run.read_metrics("train", "loss") == [(1, "train", "loss", 1.5), (2, "train", "loss", 1.25)]
    with pytest.warns(T2LWarning, match=r"dropped line 4 \('2,tra'\), torn"):
        run.truncate_metrics(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run.read_metrics() == [(1, "train", "loss", 1.5), (1, "train", "lr", 0.1)]


def test_rng_states_of_every_process_round_trip_and_an_older_checkpoint_reads_as_one():
    from text2lora._rng import rank_states_from_files, rank_states_to_files, rng_state

    torch.manual_seed(1)
    first = rng_state()
    torch.rand(7)
    second = rng_state()
    tensors, meta = rank_states_to_files([first, second])
    back = rank_states_from_files(tensors, meta)
    assert len(back) == 2 and back[1][1] == second[1]
    assert torch.equal(back[0][0]["torch_cpu"], first[0]["torch_cpu"])
    assert torch.equal(back[1][0]["torch_cpu"], second[0]["torch_cpu"])
    assert not torch.equal(back[0][0]["torch_cpu"], back[1][0]["torch_cpu"])
    # checkpoints written before states were kept per process: tensor names without a rank, one dict
    old = rank_states_from_files(dict(first[0]), first[1])
    assert len(old) == 1 and torch.equal(old[0][0]["torch_cpu"], first[0]["torch_cpu"])
