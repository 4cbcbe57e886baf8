"""A trained generator's config.json says which recipe file, code, data and step made it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from _train_util import logged
from text2lora.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_SFT = ROOT / "configs" / "tiny_sft.yaml"
TINY_TASKS = ROOT / "configs" / "data" / "tiny_tasks.jsonl"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from text2lora.testing import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("provenance") / "tiny")


def test_best_checkpoint_records_recipe_data_and_chosen_step(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    assert main(["train", "sft", str(TINY_SFT), "--base", str(tiny_dir), "--latent-dim", "16", "--head-in", "32",
                 "--quiet", "--device", "cpu", "--out", str(out), "--steps", "3", "--eval-every", "1"]) == 0
    training = json.loads((out / "best" / "config.json").read_text())["training"]
    assert training["recipe"] == "tiny_sft"
    assert training["recipe_file"] == "configs/tiny_sft.yaml"
    assert training["recipe_sha256"] == hashlib.sha256(TINY_SFT.read_bytes()).hexdigest()
    assert training["steps"] == 3
    vals = logged(out, "loss", "val")  # validated at steps 1, 2, 3: the best is the first minimum
    assert training["step"] == 1 + vals.index(min(vals))
    assert training["data"] == {f"user:{TINY_TASKS.relative_to(ROOT)}":
                                hashlib.sha256(TINY_TASKS.read_bytes()).hexdigest()}
    # the checkpoint still loads as a generator
    from text2lora import TextToLoRA

    assert TextToLoRA.from_pretrained(out / "best").hyper_config.latent_dim == 16


def test_multi_task_lora_records_recipe_data_and_chosen_step(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    recipe = ROOT / "configs" / "tiny_mt_lora.yaml"
    out = tmp_path / "mt"
    assert main(["train", "mt-lora", str(recipe), "--base", str(tiny_dir), "--quiet", "--device", "cpu",
                 "--out", str(out), "--steps", "3", "--eval-every", "1"]) == 0
    training = json.loads((out / "best" / "text2lora.json").read_text())["training"]
    assert training["recipe"] == "tiny_mt_lora"
    assert training["recipe_file"] == "configs/tiny_mt_lora.yaml"
    assert training["recipe_sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert training["steps"] == 3
    vals = logged(out, "loss", "val")
    assert training["step"] == 1 + vals.index(min(vals))
    assert training["data"] == {f"user:{TINY_TASKS.relative_to(ROOT)}":
                                hashlib.sha256(TINY_TASKS.read_bytes()).hexdigest()}
    # the adapter still loads as a plain adapter
    from text2lora.adapter import LoRAAdapter

    assert LoRAAdapter.load(out / "best").meta["task"] == "multi-task"


def test_two_builds_of_the_same_data_have_one_digest(tmp_path):
    from text2lora.data import Example, TaskRecord
    from text2lora.data.records import content_digest, save_collection

    def records(answer: str):
        return [TaskRecord(name="user/t", source="user", license="MIT", citation="", metric="exact_match",
                           train_descriptions=["Answer."], heldout_descriptions=[],
                           splits={"train": [Example(f"q{i}", answer) for i in range(50)]})]

    a = save_collection("x", records("yes"), build={"seconds": 1.0}, root=tmp_path / "a")
    b = save_collection("x", records("yes"), build={"seconds": 2.5}, root=tmp_path / "b")
    c = save_collection("x", records("no"), build={"seconds": 1.0}, root=tmp_path / "c")
    assert (a / "manifest.json").read_bytes() != (b / "manifest.json").read_bytes()  # build time differs
    assert (a / "examples.bin").read_bytes() == (b / "examples.bin").read_bytes()
    assert content_digest(a) == content_digest(b) != content_digest(c)
