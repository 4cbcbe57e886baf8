"""The Hugging Face Hub: generators and adapters fetched by repo id, offline, from a real Hub cache.

The test writes what :mod:`text2lora.publish` would upload, lays it out as the Hub cache does
(``models--org--name/{blobs,refs,snapshots}``), and runs the library in a fresh process with
``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` pointing there, so ``huggingface_hub`` resolves the
repo ids exactly as it would after a download.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import make_base, random_adapter

from text2lora.hub import generator_card, is_repo_id
from text2lora.publish import prepare_adapter_folder, prepare_generator_folder

COMMIT = hashlib.sha1(b"text2lora test snapshot").hexdigest()


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay ``folder`` out as huggingface_hub's cache holds a downloaded model repo at ``main``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    from text2lora.generator import TextToLoRA

    root = tmp_path_factory.mktemp("hub")
    base = make_base("llama")
    gen = TextToLoRA.init(base, latent_dim=16, head_in=32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in gen.hypernet.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # a generator whose adapters are not all zero
    prepare_generator_folder(gen, root / "upload-gen", "t2l-test/tiny-gen")
    adapter = random_adapter(base.spec, seed=7)
    prepare_adapter_folder(adapter, root / "upload-adapter", "t2l-test/tiny-adapter")
    cache = root / "hf-cache"
    put_in_hub_cache(cache, "t2l-test/tiny-gen", root / "upload-gen")
    put_in_hub_cache(cache, "t2l-test/tiny-adapter", root / "upload-adapter")
    return root, cache


def test_repo_id_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("org/name") and is_repo_id("Org-1/model.v2_x")
    assert not is_repo_id("name") and not is_repo_id("/abs/path") and not is_repo_id("a/b/c")
    assert not is_repo_id("../x") and not is_repo_id("./x")
    (tmp_path / "runs" / "x").mkdir(parents=True)
    assert not is_repo_id("runs/x")  # an existing local path always wins


def test_offline_hub_cache(tmp_path, hub_cache):
    root, cache = hub_cache
    script = textwrap.dedent(f"""
        import json, sys, torch
        import text2lora as t2l
        from text2lora.cli import main
        from text2lora.hub import HubError
        from text2lora.publish import push_generator
        out = {{}}
        gen = t2l.TextToLoRA.from_pretrained("t2l-test/tiny-gen")
        out["source"] = gen.source
        local = t2l.TextToLoRA.from_pretrained({str(root / "upload-gen")!r})
        a, b = gen.generate("Sort words."), local.generate("Sort words.")
        out["same_adapter"] = all(torch.equal(a.A[m], b.A[m]) and torch.equal(a.B[m], b.B[m]) for m in a.A)
        out["nonzero"] = bool(a.B["q_proj"].abs().sum() > 0)
        ad = t2l.LoRAAdapter.load("t2l-test/tiny-adapter")
        ref = t2l.LoRAAdapter.load({str(root / "upload-adapter")!r})
        out["adapter_equal"] = all(torch.equal(ad.A[m], ref.A[m]) and torch.equal(ad.B[m], ref.B[m]) for m in ad.A)
        for what, call in (("gen", lambda: t2l.TextToLoRA.from_pretrained("t2l-test/missing")),
                           ("adapter", lambda: t2l.LoRAAdapter.load("t2l-test/missing")),
                           ("push", lambda: push_generator(gen, "t2l-test/new"))):
            try:
                call()
                out[what] = None
            except HubError as e:
                out[what] = str(e)
        out["cli"] = main(["generate", "--model", "t2l-test/missing", "task", "--out", {str(tmp_path / "o")!r}])
        print("RESULT " + json.dumps(out))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home"),
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, proc.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    assert out["source"].startswith(str(cache / "models--t2l-test--tiny-gen" / "snapshots" / COMMIT))
    assert out["same_adapter"] and out["nonzero"] and out["adapter_equal"]
    for what in ("gen", "adapter"):
        assert "t2l-test/missing" in out[what] and "Hub is unreachable" in out[what]
        assert "local" in out[what] and "\n" not in out[what]
    assert "HF_HUB_OFFLINE" in out["push"]
    assert out["cli"] == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("t2l: error:")]
    assert len(err) == 1 and "Hub is unreachable" in err[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def table_rows(card: str) -> dict[str, str]:
    """The two-column rows of the Markdown tables in ``card``, first cell -> second cell."""
    cells = (line.strip().strip("|").split("|") for line in card.splitlines() if line.lstrip().startswith("|"))
    return {c[0].strip(): c[1].strip() for c in cells if len(c) == 2}


def test_generator_card_from_config_and_run(tmp_path, hub_cache):
    root, _ = hub_cache
    cfg = json.loads((root / "upload-gen" / "config.json").read_text())
    card = (root / "upload-gen" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: text2lora\n")
    assert "t2l-test/tiny-gen" in card and "tiny-llama (llama, 2 layers)" in card
    rows = table_rows(card)
    assert rows["adapted modules"] == "q_proj, v_proj" and "all-minilm-l6-v2 (384-d)" in rows["description encoder"]
    assert rows["head size"] == str(cfg["hyper"]["head_size"])

    # a checkpoint inside a training run: the recipe's tasks and the best validation loss appear
    run = tmp_path / "run"
    shutil.copytree(root / "upload-gen", run / "best")
    (run / "config.yaml").write_text("name: sft-demo\ntasks: [boolq, arc_easy]\nsteps: 300\nlr: 2.5e-05\n")
    losses = [2.5, 1.75, 1.875]
    (run / "metrics.csv").write_text("step,split,metric,value,time\n" + "".join(
        f"{100 * (i + 1)},val,loss,{v},0\n{100 * (i + 1)},train,loss,0.5,0\n" for i, v in enumerate(losses)))
    card = generator_card(cfg, "tiny-llama", run / "best", "org/demo")
    assert "- boolq\n- arc_easy" in card and "steps: 300" in card
    assert float(table_rows(card)["loss"]) == min(losses) and "0.5000" not in card


def test_adapter_card(hub_cache):
    root, _ = hub_cache
    card = (root / "upload-adapter" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n") and "> random 7" in card and "rank 8, alpha 16.0" in card
    assert (root / "upload-adapter" / "adapter_config.json").is_file()
