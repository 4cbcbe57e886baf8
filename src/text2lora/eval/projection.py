"""A 2-D map of what a generator learned: PCA of its adapters for many descriptions.

Each point is one generated adapter (all its A and B matrices, flattened). The descriptions are the
ten benchmarks' training and held-out descriptions, coloured by task family, plus random strings
(grey). Two numbers summarise the picture without looking at it:

- ``nearest_task_accuracy``: the share of held-out descriptions whose adapter lies nearest (cosine,
  in the full weight space, not the 2-D projection) to the mean adapter of their *own* task's
  training descriptions; chance is 1 / number of tasks;
- ``explained_variance``: the share of variance the two plotted components hold.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from .._io import atomic_write_bytes, atomic_write_json
from ..data import BENCHMARKS
from ..data.descriptions import alignment_set, benchmark_descriptions

__all__ = ["TASK_FAMILIES", "MapPoint", "adapter_map", "plot_adapter_map"]

#: Task family of each benchmark (the colour of its points).
TASK_FAMILIES = {
    "arc_challenge": "science QA", "arc_easy": "science QA", "openbookqa": "science QA",
    "boolq": "reading comprehension", "hellaswag": "commonsense", "piqa": "commonsense",
    "winogrande": "commonsense", "gsm8k": "math", "humaneval": "code", "mbpp": "code",
}


@dataclass
class MapPoint:
    task: str
    kind: str
    """``train``, ``heldout`` or ``random``."""
    description: str
    x: float = 0.0
    y: float = 0.0


def _flat(batch) -> Tensor:
    parts = [t.flatten(1) for name in sorted(batch.A) for t in (batch.A[name], batch.B[name])]
    return torch.cat(parts, 1).float()


def adapter_map(gen, tasks: Sequence[str] = BENCHMARKS, random_per_task: int = 5) -> dict[str, Any]:
    """Generate adapters for every task's training + held-out descriptions (and random strings),
    project them on their first two principal components, and score how well they cluster by task."""
    sets = benchmark_descriptions()
    points: list[MapPoint] = []
    for task in tasks:
        for kind in ("train", "heldout"):
            points += [MapPoint(task, kind, d) for d in sets[task][kind]]
        points += [MapPoint(task, "random", d) for d in alignment_set(task, "random_strings")[:random_per_task]]
    with torch.inference_mode():
        vecs = _flat(gen.forward(gen.embed([p.description for p in points])))
    centred = vecs - vecs.mean(0, keepdim=True)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    xy = centred @ v[:2].T
    for p, (x, y) in zip(points, xy.tolist()):
        p.x, p.y = x, y
    unit = torch.nn.functional.normalize(vecs, dim=1)
    cents = torch.stack([unit[[i for i, p in enumerate(points) if p.task == t and p.kind == "train"]].mean(0)
                         for t in tasks])
    held = [i for i, p in enumerate(points) if p.kind == "heldout"]
    nearest = (unit[held] @ torch.nn.functional.normalize(cents, dim=1).T).argmax(1).tolist()
    hits = sum(tasks[j] == points[i].task for i, j in zip(held, nearest))
    var = s.square()
    var = var / var.sum() if float(var.sum()) > 0 else var  # an untrained generator: every adapter the same
    return {
        "points": [p.__dict__ for p in points],
        "explained_variance": [round(float(v_), 4) for v_ in var[:2]],
        "nearest_task_accuracy": round(hits / len(held), 4),
        "nearest_task_chance": round(1 / len(tasks), 4),
        "generator": getattr(gen, "source", None),
    }


def plot_adapter_map(result: dict[str, Any], path: str | Path, title: str = "Generated adapters (PCA)") -> Path:
    """Scatter plot of :func:`adapter_map`'s points (PNG, written atomically) and its JSON beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted(set(TASK_FAMILIES.values()))
    colours = dict(zip(families, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(7.5, 6))
    pts = result["points"]
    rnd = [p for p in pts if p["kind"] == "random"]
    ax.scatter([p["x"] for p in rnd], [p["y"] for p in rnd], c="0.7", marker="x", s=22, label="random strings")
    for fam in families:
        for kind, marker in (("train", "o"), ("heldout", "^")):
            sel = [p for p in pts if p["kind"] == kind and TASK_FAMILIES.get(p["task"]) == fam]
            if sel:
                ax.scatter([p["x"] for p in sel], [p["y"] for p in sel], color=colours[fam], marker=marker, s=30,
                           edgecolors="k" if kind == "heldout" else "none", linewidths=0.5,
                           label=f"{fam} ({'held-out' if kind == 'heldout' else 'training'})")
    for task in dict.fromkeys(p["task"] for p in pts):
        own = [p for p in pts if p["task"] == task and p["kind"] != "random"]
        ax.annotate(task, (sum(p["x"] for p in own) / len(own), sum(p["y"] for p in own) / len(own)),
                    fontsize=8, ha="center", weight="bold")
    ev = result["explained_variance"]
    ax.set_xlabel(f"PC 1 ({100 * ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * ev[1]:.1f}% of variance)")
    ax.set_title(f"{title}\nheld-out description nearest its own task: {100 * result['nearest_task_accuracy']:.0f}% "
                 f"(chance {100 * result['nearest_task_chance']:.0f}%)", fontsize=10)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(path.with_suffix(".json"), result)
    return path
