"""Recipes, overrides, run directories and the `t2l train` command line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import yaml

from text2lora.cli import main
from text2lora.errors import CheckpointError, ConfigError
from text2lora.train import RECIPES, RunDir, load_config
from text2lora.train.config import config_to_yaml, parse_overrides
from text2lora.train.run import optimizer_state_from_files, optimizer_state_to_files

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "configs" / "experiments").glob("*.yaml")])
# every one is a training recipe with a `recipe:` key
TINY_TASKS = ROOT / "configs" / "data" / "tiny_tasks.jsonl"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_recipe_loads_and_round_trips(path, tmp_path):
    recipe = yaml.safe_load(path.read_text())["recipe"]
    cfg = load_config(recipe, path)
    assert type(cfg) is RECIPES[recipe] and cfg.name == path.stem
    again = tmp_path / "again.yaml"
    again.write_text(config_to_yaml(cfg))
    assert load_config(recipe, again) == cfg


def test_recipe_files_cover_every_command():
    assert {yaml.safe_load(p.read_text())["recipe"] for p in CONFIGS} == set(RECIPES)
    sft = load_config("sft", ROOT / "configs" / "experiments" / "sft_bigbench.yaml")
    assert (sft.lr, sft.weight_decay, sft.label_smoothing, sft.l2_coef, sft.neftune_alpha, sft.grad_clip,
            sft.tasks_per_batch, sft.max_prompt_tokens) == (2.5e-5, 1e-2, 0.1, 1e-3, 5.0, 1.0, 8, 512)


def test_bad_keys_and_types_name_the_key_and_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'lrate'.*valid keys: .*\blr\b"):
        load_config("sft", overrides=["--lrate", "1e-4"])
    with pytest.raises(ConfigError, match=r"'head_size' must be one of 'L', 'M', 'S', got 'XL'"):
        load_config("sft", overrides=["--head-size", "XL"])
    with pytest.raises(ConfigError, match=r"'steps' must be int, got 'many'"):
        load_config("lora", overrides=["--steps", "many"])
    with pytest.raises(ConfigError, match=r"'conditioning' must be one of 'description', 'task-id'"):
        load_config("recon", library="x", conditioning="example")
    f = tmp_path / "r.yaml"
    f.write_text("recipe: lora\nsteps: 3\n")
    with pytest.raises(ConfigError, match="recipe for `t2l train lora`, not `t2l train sft`"):
        load_config("sft", f)
    with pytest.raises(ConfigError, match="library is empty"):
        load_config("recon")
    with pytest.raises(ConfigError, match=r"^warmup_frac must be in \[0, 1\), got 1.0$"):
        load_config("sft", warmup_frac=1.0)
    with pytest.raises(ConfigError, match=r"^steps must be >= 1, got 0$"):
        load_config("sft", overrides=["--steps", "0"])
    with pytest.raises(ConfigError, match=r"'max_tasks' must be int or null, got 'x'"):
        load_config("sft", max_tasks="x")
    with pytest.raises(ConfigError, match="target_modules is empty"):
        load_config("sft", target_modules=[])
    overrides = ["--lr", "1e-4", "--tasks", "a,b", "--init-from=x", "--max_tasks", "null", "--exclude-tasks", "c"]
    assert parse_overrides(overrides) == {"lr": "1e-4", "tasks": "a,b", "init_from": "x", "max_tasks": None,
                                          "exclude_tasks": "c"}
    cfg = load_config("sft", overrides=overrides + ["--name", "7"])
    assert (cfg.lr, cfg.tasks, cfg.exclude_tasks, cfg.init_from, cfg.max_tasks, cfg.name) == (
        1e-4, ["a", "b"], ["c"], "x", None, "7")


@pytest.mark.parametrize("recipe", RECIPES)
def test_help_lists_every_key_with_its_default_and_description(recipe):
    from text2lora.train.config import config_help

    lines = config_help(recipe).splitlines()
    fields = RECIPES[recipe].model_fields
    assert [ln.split()[0] for ln in lines] == [f"--{k}" for k in fields]
    assert all(f.description for f in fields.values())
    steps = next(ln for ln in lines if ln.split()[0] == "--steps")
    assert "(int, >= 1, default 1000): Number of optimiser steps" in steps


def test_optimizer_state_round_trips_without_pickle():
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.1)
    p.grad = torch.randn(3, 2)
    opt.step()
    tensors, meta = optimizer_state_to_files(opt.state_dict())
    import json

    back = optimizer_state_from_files(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=5.0)
    opt2.load_state_dict(back)
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.9, 0.999)
    for k in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(opt2.state_dict()["state"][0][k], opt.state_dict()["state"][0][k])


def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = load_config("sft", steps=4, keep_checkpoints=2)
    run = RunDir.open(tmp_path / "run", cfg)
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([p])
    run.save_checkpoint(1, {"w": p.detach()}, opt.state_dict(), {"x": 1})
    import safetensors.torch as st

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "save_file", full)
    with pytest.raises(CheckpointError, match=r"the disk is full.*step-000001 is intact"):
        run.save_checkpoint(2, {"w": p.detach()}, opt.state_dict(), {"x": 2})
    monkeypatch.undo()
    assert [c.name for c in run.checkpoints()] == ["step-000001"]
    assert not [x for x in (tmp_path / "run" / "checkpoints").iterdir() if x.name.startswith(".")]
    ck = run.load_checkpoint()
    assert ck["state"]["x"] == 1 and torch.equal(ck["model"]["w"], torch.ones(2))


@pytest.mark.parametrize("recipe", ["", *RECIPES])
def test_help(recipe, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", *([recipe] if recipe else []), "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "RECIPE" in out if not recipe else "--steps" in out and "--resume" in out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from text2lora.testing import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


def test_cli_sft_refuses_existing_run_and_resumes(tiny_dir, tmp_path, capsys):
    cfg = ROOT / "configs" / "tiny_sft.yaml"
    args = ["train", "sft", str(cfg), "--base", str(tiny_dir), "--tasks", str(TINY_TASKS), "--latent-dim", "16",
            "--head-in", "32", "--quiet", "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(args + ["--steps", "2"]) == 0
    assert (tmp_path / "run" / "best" / "config.json").is_file()
    assert main(args + ["--steps", "2"]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert main(args + ["--steps", "3", "--resume"]) == 0  # steps may grow on resume
    assert [c.name for c in RunDir(tmp_path / "run", load_config("sft")).checkpoints()] == ["step-000002", "step-000003"]
    assert main(args + ["--lr", "1e-3", "--resume"]) == 2
    assert "config key(s) lr differ" in capsys.readouterr().err
    assert main(["train", "sft", str(cfg), "--bogus", "1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err
    assert main(["train", "sft", str(cfg), "--out", str(tmp_path / "nothing"), "--resume"]) == 2


def test_cli_lora_then_recon_on_its_library(tiny_dir, tmp_path, capsys):
    lib = tmp_path / "lora" / "library"
    assert main(["train", "lora", str(ROOT / "configs" / "tiny_lora.yaml"), "--base", str(tiny_dir), "--tasks",
                 str(TINY_TASKS), "--steps", "1", "--out", str(tmp_path / "lora"), "--device", "cpu",
                 "--max-tasks", "3"]) == 0
    names = sorted(p.name for p in lib.iterdir())
    assert len(names) == 3 and all(n.startswith("user__") for n in names)  # --max-tasks: a seeded subset
    assert main(["train", "recon", str(ROOT / "configs" / "tiny_recon.yaml"), "--library", str(lib), "--steps", "2",
                 "--latent-dim", "16", "--head-in", "32", "--quiet", "--out", str(tmp_path / "recon")]) == 0
    report = (tmp_path / "recon" / "recon_report.csv").read_text().splitlines()
    assert report[0] == "task,path,l1_z,rel_err_ab,rel_err_delta" and len(report) == 4
    assert main(["train", "mt-lora", str(ROOT / "configs" / "tiny_mt_lora.yaml"), "--base", str(tiny_dir),
                 "--tasks", str(TINY_TASKS), "--steps", "1", "--quiet", "--out", str(tmp_path / "mt"),
                 "--device", "cpu"]) == 0
    assert (tmp_path / "mt" / "best" / "adapter_config.json").is_file()


def test_run_dir_plots_and_tensorboard_when_installed(tmp_path):
    """PNG curves and TensorBoard events are written when matplotlib / tensorboard are importable."""
    pytest.importorskip("matplotlib")
    run = RunDir.open(tmp_path / "run", load_config("sft"))
    for step in range(1, 4):
        run.log(step, "train", {"loss": 3.0 / step, "lr": 1e-3})
    run.log(3, "val", {"loss": 1.5})
    pngs = run.plot()
    assert sorted(p.name for p in pngs) == ["loss.png", "lr.png"]
    assert (tmp_path / "run" / "plots" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r[3] for r in run.read_metrics("train", "loss")] == pytest.approx([3.0, 1.5, 1.0])
    run.truncate_metrics(2)
    assert [r[0] for r in run.read_metrics()] == [1, 1, 2, 2]
    run.close()
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    assert any((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_base_dtype_sets_the_precision_of_the_frozen_base(tmp_path):
    import torch

    from text2lora.testing import save_tiny_base
    from text2lora.train.loop import load_train_base, make_accelerator

    path = save_tiny_base(tmp_path / "base")
    cpu = torch.device("cpu")
    auto = load_train_base(load_config("sft", base=str(path)), cpu)
    assert {p.dtype for p in auto.model.parameters()} == {torch.float32}  # auto is float32 off CUDA
    with pytest.raises(ConfigError, match="bfloat16 is for CUDA.*use base_dtype auto or float32"):
        make_accelerator(load_config("sft", base=str(path), base_dtype="bfloat16", device="cpu"))
    with pytest.raises(ConfigError, match="base_dtype"):
        load_config("sft", base_dtype="float16")
    with pytest.raises(ConfigError, match="base_dtype"):  # recon loads no base model
        load_config("recon", base_dtype="float32")
