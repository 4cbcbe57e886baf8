"""Random-number-generator states as checkpoint data: Python's as JSON, torch's as tensors.

Resumable training saves these with every checkpoint and restores them on resume, so a resumed run
draws the same numbers as an uninterrupted one. Each process of a data-parallel run draws its own
numbers (dropout masks and NEFTune noise take as many as its own batch's shape needs), so a checkpoint
keeps one state per process (:func:`rank_states_to_files`) and each process gets its own back.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import Tensor

__all__ = ["random_state", "set_random_state", "rng_state", "set_rng_state", "rank_states_to_files",
           "rank_states_from_files"]


def random_state(rng: random.Random | None = None) -> list[Any]:
    """The state of ``rng`` (default: the ``random`` module's generator) as a JSON-ready list."""
    version, internal, gauss = (rng or random).getstate()  # type: ignore[union-attr]
    return [version, list(internal), gauss]


def set_random_state(state: list[Any], rng: random.Random | None = None) -> None:
    """Restore a :func:`random_state` into ``rng`` (default: the ``random`` module's generator)."""
    version, internal, gauss = state
    (rng or random).setstate((version, tuple(internal), gauss))  # type: ignore[union-attr]


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Torch (CPU and CUDA) RNG states as tensors, Python's as JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return tensors, {"python": random_state()}


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only on as many devices as saved them)."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    set_random_state(meta["python"])


RngState = tuple[dict[str, Tensor], dict[str, Any]]
"""What :func:`rng_state` returns: (torch states as tensors, Python's as JSON)."""


def rank_states_to_files(states: list[RngState]) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Every process's :func:`rng_state` (in process order) as one dict of tensors (``"<rank>.<name>"``)
    and a JSON-ready list."""
    tensors = {f"{rank}.{k}": v for rank, (ts, _) in enumerate(states) for k, v in ts.items()}
    return tensors, [meta for _, meta in states]


def rank_states_from_files(tensors: dict[str, Tensor], meta: list[dict[str, Any]] | dict[str, Any]) -> list[RngState]:
    """Inverse of :func:`rank_states_to_files`. A checkpoint written before states were kept per process
    (``meta`` one dict, tensor names without a rank) reads as one state, the main process's."""
    if isinstance(meta, dict):
        return [(dict(tensors), meta)]
    states: list[RngState] = [({}, m) for m in meta]
    for key, t in tensors.items():
        rank, name = key.split(".", 1)
        states[int(rank)][0][name] = t
    return states
