"""The training commands with two processes (DDP over gloo on CPU): the same Accelerate code path a
multi-GPU ``accelerate launch --multi_gpu`` run takes, without GPUs. ``accelerate launch --cpu``
starts a single process (CPU multi-process needs MPI there), so the processes are started with
PyTorch's ``torchrun``, whose environment Accelerate reads the same way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from text2lora.testing import save_tiny_base

ROOT = Path(__file__).resolve().parents[1]


def _launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "text2lora.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    base = save_tiny_base(root / "tiny-llama")
    path = root / "sft.yaml"
    path.write_text(
        "recipe: sft\n"
        f"base: {base}\n"
        "encoder: all-minilm-l6-v2\n"
        f"tasks: [{ROOT / 'configs' / 'data' / 'tiny_tasks.jsonl'}]\n"
        "val_tasks: [user/is_even]\n"
        "tasks_per_batch: 2\nhead_size: M\nlatent_dim: 16\nhead_in: 32\n"
        "steps: 4\nlr: 1.0e-3\neval_every: 2\nsave_every: 2\nval_examples: 4\n"
        "max_prompt_tokens: 64\nmax_response_tokens: 16\n")
    return path


def test_sft_runs_with_two_processes_resumes_and_refuses_another_process_count(recipe, tmp_path):
    run = tmp_path / "run"
    first = _launch(["train", "sft", str(recipe), "--out", str(run), "--quiet", "--steps", "2"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((run / "checkpoints" / "step-000002" / "state.json").read_text())
    assert len(state["job_ranks"]) == 2  # each process kept its own sampler position
    assert state["job_ranks"][0] != state["job_ranks"][1]

    single = subprocess.run([sys.executable, "-m", "text2lora.cli", "train", "sft", str(recipe), "--out", str(run),
                             "--resume", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert single.returncode == 2 and "Traceback" not in single.stderr
    assert "written by 2 process(es) but this run has 1" in single.stderr

    again = _launch(["train", "sft", str(recipe), "--out", str(run), "--quiet", "--resume"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run / "checkpoints" / "step-000004").is_dir() and (run / "best" / "model.safetensors").is_file()
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]
             if ",train,loss," in line]
    assert steps == [1, 2, 3, 4]  # logged once (main process), no step lost or repeated


def test_two_processes_resume_bit_identical_each_with_its_own_random_states(recipe, tmp_path):
    """With one task a batch, the two processes' batches differ in shape, so their NEFTune noise draws
    advance their RNGs by different amounts: a resumed process must get its own RNG states back, not the
    main process's (which moved the resumed run's weights by ~1e-3). The cut run is what a kill after
    step 3 leaves (checkpoint step 2, metrics up to step 4 that resume drops); the tolerance is zero."""
    from safetensors.torch import load_file

    args = ["train", "sft", str(recipe), "--quiet", "--tasks-per-batch", "1", "--keep-checkpoints", "2"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    first = _launch([*args, "--out", str(full)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step-000004")
    again = _launch([*args, "--out", str(cut), "--resume"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    final = Path("checkpoints") / "step-000004"
    rng = load_file(str(full / final / "rng.safetensors"))
    assert not torch.equal(rng["0.torch_cpu"], rng["1.torch_cpu"])  # the processes' streams did part
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        a, b = load_file(str(full / final / name)), load_file(str(cut / final / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    lines = [(run / "metrics.csv").read_text().splitlines()[1:] for run in (full, cut)]
    assert [row.split(",")[:4] for row in lines[0] if "step_seconds" not in row] == \
        [row.split(",")[:4] for row in lines[1] if "step_seconds" not in row]
