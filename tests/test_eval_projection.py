"""The adapter map (``t2l map``): PCA coordinates, the nearest-task score, the plot files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from text2lora.data import BENCHMARKS
from text2lora.data.descriptions import benchmark_descriptions
from text2lora.eval.projection import adapter_map, plot_adapter_map


def _planted(signal: float):
    """A stand-in generator: each description's "adapter" is its task's direction times ``signal``
    plus noise, so how well adapters cluster by task is known in advance."""
    task_of = {d: t for t, sets in benchmark_descriptions().items() for k in ("train", "heldout") for d in sets[k]}
    dirs = torch.randn(len(BENCHMARKS), 64, generator=torch.Generator().manual_seed(0))

    def embed(texts):
        g = torch.Generator().manual_seed(1)
        noise = torch.randn(len(texts), 64, generator=g)
        rows = [signal * dirs[BENCHMARKS.index(task_of[t])] if t in task_of else torch.zeros(64) for t in texts]
        return torch.stack(rows) + noise

    def forward(emb):
        return SimpleNamespace(A={"q_proj": emb[:, :32].reshape(-1, 2, 16)}, B={"q_proj": emb[:, 32:].reshape(-1, 4, 8)})

    return SimpleNamespace(embed=embed, forward=forward, source="planted")


def test_adapters_that_cluster_by_task_score_high_and_noise_scores_near_chance():
    good, noise = adapter_map(_planted(4.0)), adapter_map(_planted(0.0))
    assert good["nearest_task_accuracy"] == 1.0
    assert noise["nearest_task_accuracy"] < 0.4
    assert good["nearest_task_chance"] == 0.1
    n = {k: sum(p["kind"] == k for p in good["points"]) for k in ("train", "heldout", "random")}
    assert n == {"train": 80, "heldout": 51, "random": 50}
    xs = torch.tensor([[p["x"], p["y"]] for p in good["points"]])
    assert xs.mean(0).abs().max() < 1e-3                     # centred
    assert xs[:, 0].var() >= xs[:, 1].var()                   # first component first
    ev = good["explained_variance"]
    assert 0 < ev[1] <= ev[0] < 1 and sum(ev) > 0.2           # task directions dominate the variance


def test_plot_writes_png_and_json(tmp_path):
    result = adapter_map(_planted(4.0))
    path = plot_adapter_map(result, tmp_path / "map.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "map.json").read_text())["nearest_task_accuracy"] == 1.0


def test_map_cli_rejects_a_non_png_path(capsys):
    from text2lora.cli import main

    assert main(["map", "--out", "map.txt"]) == 2
    assert "--out must be a .png path" in capsys.readouterr().err
