"""The Hugging Face Hub: download and upload folders, and write model cards from plain data.

The only module that talks to the network for checkpoints, and a leaf: it imports nothing of text2lora but
the errors and the file helpers. ``TextToLoRA.from_pretrained("org/name")`` and ``LoRAAdapter.load("org/name")``
call :func:`download` when the argument is not an existing local path but looks like a repo id;
:mod:`text2lora.publish` saves a generator or an adapter into a folder with a card and calls :func:`upload`.
Downloads go through ``huggingface_hub.snapshot_download``, so the Hub cache (``HF_HUB_CACHE``), offline
mode (``HF_HUB_OFFLINE=1``) and tokens (``HF_TOKEN``, ``hf auth login``) work as everywhere else in the
ecosystem.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Sequence

from .errors import T2LError

__all__ = ["HubError", "is_repo_id", "download", "upload", "generator_card", "adapter_card"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HubError(T2LError):
    """A repo could not be fetched from or pushed to the Hugging Face Hub."""


def is_repo_id(name: str | Path) -> bool:
    """True when ``name`` is not an existing local path and has the shape ``org/name``."""
    s = str(name)
    return not Path(s).expanduser().exists() and bool(_REPO_ID.match(s)) and ".." not in s


def download(repo_id: str, revision: str | None = None, what: str = "generator checkpoint") -> Path:
    """A local snapshot directory of ``repo_id`` (from the Hub cache, downloading what is missing)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    local_hint = (f"pass a local {what} directory instead (e.g. one made with "
                  f"`hf download {repo_id} --local-dir DIR` where the Hub is reachable)")
    try:
        return Path(snapshot_download(repo_id, revision=revision, library_name="text2lora"))
    except GatedRepoError:
        raise HubError(f"{repo_id} on the Hugging Face Hub is gated: accept its terms on the Hub and log in "
                       "(`hf auth login` or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r} on the Hugging Face Hub; pass an existing "
                       "branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise HubError(f"{repo_id!r} is neither a local directory nor a Hugging Face Hub repo you can read "
                       "(it does not exist, or it is private and needs a token: `hf auth login` or HF_TOKEN); "
                       f"check the name, or {local_hint}") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise HubError(f"{repo_id!r} is not a local directory and the Hugging Face Hub is unreachable (offline "
                       f"or HF_HUB_OFFLINE=1) with no cached copy of it; connect to the network, or "
                       f"{local_hint}") from None
    except (HfHubHTTPError, OSError) as e:
        raise HubError(f"could not fetch {repo_id} from the Hugging Face Hub ({str(e).splitlines()[0]}); "
                       f"retry, or {local_hint}") from None


def upload(folder: Path, repo_id: str, private: bool | None = None, token: str | None = None,
           message: str = "Upload from text2lora") -> str:
    """Create ``repo_id`` on the Hub if needed and upload everything in ``folder``; returns the repo URL."""
    from huggingface_hub import create_repo, upload_folder
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if not _REPO_ID.match(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repo id; use the form org/name")
    try:
        url = create_repo(repo_id, token=token, private=private, exist_ok=True)
        upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, commit_message=message)
    except OfflineModeIsEnabled:
        raise HubError(f"cannot push to {repo_id}: HF_HUB_OFFLINE=1 is set; unset it and connect to the "
                       "network") from None
    except (HfHubHTTPError, OSError) as e:
        raise HubError(f"pushing to {repo_id} failed ({str(e).splitlines()[0]}); check the network and that "
                       "you are logged in with write access (`hf auth login` or HF_TOKEN)") from None
    return str(url)


# ---------------------------------------------------------------------------- model cards


def _run_dir(checkpoint: Path) -> Path | None:
    """The training run directory a checkpoint lives in (``best/`` or ``checkpoints/step-N/``)."""
    p = checkpoint.resolve()
    for root in (p.parent, p.parent.parent):
        if (root / "config.yaml").is_file() and (root / "metrics.csv").is_file():
            return root
    return None


def _run_summary(run: Path) -> tuple[dict[str, Any], dict[str, float]]:
    import yaml

    try:
        recipe = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        recipe = {}
    best: dict[str, float] = {}
    try:
        with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("split") in ("val", "valid", "validation") and row.get("value"):
                    key, v = row["metric"], float(row["value"])
                    better = min if "loss" in key else max
                    best[key] = better(best.get(key, v), v)
    except (OSError, ValueError, KeyError):
        pass
    return (recipe if isinstance(recipe, dict) else {}), best


def _front_matter(library: str, tags: Sequence[str], base_id: str) -> list[str]:
    front = ["---", f"library_name: {library}", "tags:", *(f"- {t}" for t in tags)]
    if "/" in base_id and not base_id.startswith(("/", ".")):
        front.append(f"base_model: {base_id}")
    return [*front, "---"]


def generator_card(config: dict[str, Any], base_id: str, checkpoint: Path | None = None,
                   repo_id: str | None = None) -> str:
    """A model card (README.md) for a generator checkpoint, written from its ``config.json`` and the Hugging
    Face id of its base (``base_id``).

    When the checkpoint sits in a ``t2l train`` run directory, the recipe's training data and the
    best validation metrics are added.
    """
    base, enc, hyper = config.get("base", {}), config.get("encoder", {}), config.get("hyper", {})
    modules = ", ".join(m["name"] for m in base.get("modules", []))
    front = _front_matter("text2lora", ("text-to-lora", "lora", "hypernetwork"), base_id)
    name = repo_id or (checkpoint.name if checkpoint else "generator")
    lines = [*front, "", f"# {name}", "",
             "A Text-to-LoRA generator: it turns a task description into a LoRA adapter for its base model "
             "in one forward pass.", "",
             "| | |", "|---|---|",
             f"| base model | {base_id} ({base.get('model_type', '?')}, {base.get('num_layers', '?')} layers) |",
             f"| adapted modules | {modules} |",
             f"| description encoder | {enc.get('kind', '?')} {enc.get('name', '?')} ({enc.get('dim', '?')}-d) |",
             f"| head size | {hyper.get('head_size', '?')} |",
             f"| LoRA rank / alpha | {hyper.get('rank', '?')} / {hyper.get('alpha', '?')} |",
             f"| text2lora version | {config.get('library_version', '?')} |", ""]
    run = _run_dir(checkpoint) if checkpoint is not None else None
    if run is not None:
        recipe, best = _run_summary(run)
        lines += ["## Training", ""]
        import yaml

        shown = {k: recipe[k] for k in ("name", "conditioning", "library", "tasks", "exclude_tasks", "max_tasks",
                                        "val_tasks", "steps", "batch_size", "lr") if recipe.get(k) not in (None, [])}
        lines += ["Recipe (from the run's config.yaml):", "", "```yaml",
                  yaml.safe_dump(shown, sort_keys=False).rstrip() if shown else "# not recorded", "```", ""]
        if best:
            lines += ["## Validation (best during training)", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in sorted(best.items())] + [""]
    lines += ["## Use", "", "```bash", "pip install text-to-lora",
              f"t2l generate --model {repo_id or 'ORG/NAME'} \"Answer yes or no questions about a passage.\" "
              "--out my_lora", "```", "",
              "```python", "import text2lora as t2l", "from text2lora.formats.gguf import save_gguf",
              f"gen = t2l.TextToLoRA.from_pretrained(\"{repo_id or 'ORG/NAME'}\")",
              "adapter = gen.generate(\"Answer yes or no questions about a passage.\")",
              "adapter.save(\"my_lora\")                    # PEFT directory",
              "save_gguf(adapter, \"my_lora.gguf\")          # llama.cpp / Ollama adapter", "```", ""]
    return "\n".join(lines)


def adapter_card(description: str, base_id: str, modules: Sequence[str], rank: int, alpha: float,
                 use_rslora: bool = False, generator: str = "", repo_id: str | None = None) -> str:
    """A model card (README.md) for one generated adapter: its description, base (Hugging Face id), adapted
    modules, rank, alpha and the generator that made it."""
    front = _front_matter("peft", ("text-to-lora", "lora"), base_id)
    desc = description or "(no description recorded)"
    return "\n".join([*front, "", f"# {repo_id or 'text2lora adapter'}", "",
                      "A LoRA adapter generated by Text-to-LoRA from this task description:", "", f"> {desc}", "",
                      f"- base model: {base_id}", f"- modules: {', '.join(modules)}",
                      f"- rank {rank}, alpha {alpha}{' (rsLoRA)' if use_rslora else ''}",
                      f"- generator: {generator or '?'}", "",
                      "Load it with PEFT (`PeftModel.from_pretrained(base, REPO)`) or "
                      "`text2lora.LoRAAdapter.load(REPO)`.", ""])
