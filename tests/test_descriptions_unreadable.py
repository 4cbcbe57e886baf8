"""Descriptions the encoder cannot read (mostly unknown tokens, or not English for the English-only default
encoder) warn in ``generate`` and are refused by ``t2l generate`` unless ``--allow-unknown``; warnings are one
plain line on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from _serve_utils import tiny_generator
from text2lora.errors import T2LWarning


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    root = tmp_path_factory.mktemp("unreadable")
    _, g = tiny_generator(root)
    g.source_dir = root / "gen"
    return g


def _warnings_of(gen, descs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen.generate(descs)
    return [str(w.message) for w in caught if issubclass(w.category, T2LWarning)]


def test_emoji_only_descriptions_are_unknown_tokens_and_give_the_same_adapter(gen):
    """The BERT vocabulary of the default encoder has no emoji: each of these descriptions is one [UNK], so
    the two adapters are identical. That is why such a description gets a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", T2LWarning)
        a, b = gen.generate("🙂🚀🔥"), gen.generate("🐱🐶")  # one at a time, as `t2l generate` would
    assert all(torch.equal(a.A[m], b.A[m]) and torch.equal(a.B[m], b.B[m]) for m in a.A)
    msgs = _warnings_of(gen, ["🙂🚀🔥", "🐱🐶"])
    assert len(msgs) == 2 and all("100% of its tokens are unknown" in m for m in msgs), msgs


@pytest.mark.parametrize("desc", ["Решай математические задачи шаг за шагом.", "逐步解答数学应用题。",
                                  "حل مسائل الرياضيات خطوة بخطوة"])
def test_non_english_descriptions_warn(gen, desc):
    msgs = _warnings_of(gen, [desc])
    assert len(msgs) == 1 and ("not English" in msgs[0] or "unknown" in msgs[0]), msgs


@pytest.mark.parametrize("desc", ["Answer grade-school math word problems step by step.",
                                  "Résumé writing: improve the wording of a CV.", "Solve 2+2=?",
                                  "Reply with a smile 🙂 to every greeting."])
def test_readable_descriptions_do_not_warn(gen, desc):
    assert _warnings_of(gen, [desc]) == []


def _t2l(tmp, *argv):
    env = {**os.environ, "TEXT2LORA_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "text2lora.cli", *argv], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)


def test_cli_refuses_unreadable_descriptions_unless_allowed(gen, tmp_path):
    model = str(gen.source_dir)
    proc = _t2l(tmp_path, "generate", "--model", model, "Answer questions.", "🐱🐶", "--out", str(tmp_path / "o"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "🐱🐶" in lines[0] and "--allow-unknown" in lines[0]
    assert not (tmp_path / "o").exists()

    long = "Answer the question about the passage. " * 600  # ~3,600 tokens; the encoder reads 256
    proc = _t2l(tmp_path, "generate", "--model", model, "🐱🐶", long, "--allow-unknown", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    warns = [ln for ln in proc.stderr.splitlines() if ln.startswith("t2l: warning:")]
    assert len(warns) == 2, proc.stderr
    assert any("🐱🐶" in w and "unknown" in w for w in warns) and any("reads only the first 256" in w for w in warns)
    # one plain line each: no "file.py:123: UserWarning:" header and no source line under it
    assert "UserWarning" not in proc.stderr and "T2LWarning" not in proc.stderr and "warnings.warn" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 2 + 1  # + the "generated ..." summary
    assert (tmp_path / "o" / "index.json").is_file()
