"""The default suite's warning filters (pyproject.toml): a deprecation that text2lora raises, or that its own
code triggers by calling a deprecated API (attributed to the calling text2lora module), fails the test; the
warnings that dependencies raise among themselves, or that tests provoke on purpose with PEFT, are ignored by
their module and message, and nothing else is."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning, FutureWarning])
def test_the_projects_own_deprecations_are_errors(category):
    with pytest.raises(category):
        warnings.warn_explicit("an old API", category, "adapter.py", 1, module="text2lora.adapter")
    with pytest.raises(category):
        warnings.warn_explicit("an old API", category, "cli.py", 1, module="text2lora.cli.generator")


def test_a_dependencys_own_deprecation_is_not_an_error():
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module="transformers.utils")
    assert seen == []


def test_other_warnings_are_still_shown():
    """Only the listed dependency messages are filtered: another warning from the same module is recorded."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("something new", UserWarning, "layer.py", 1, module="peft.tuners.lora.layer")
        warnings.warn_explicit("something else", FutureWarning, "modeling_utils.py", 1,
                               module="transformers.modeling_utils")
    assert [str(w.message) for w in seen] == ["something new", "something else"]


def test_the_filtered_dependency_warnings_are_the_real_ones():
    """PEFT wrapping a model (transformers' deprecated `is_gradient_checkpointing`) and a LoRA bias on a layer
    without one (PEFT's own warning): their real messages match the filters, so they are not shown."""
    peft = pytest.importorskip("peft")
    from text2lora.testing import tiny_model

    with warnings.catch_warnings(record=True) as seen:
        peft.get_peft_model(tiny_model("llama"), peft.LoraConfig(r=4, target_modules=["q_proj"], lora_bias=True))
    assert [f"{w.category.__name__}: {w.message}" for w in seen] == []
    with warnings.catch_warnings(record=True) as seen:  # and the same calls do warn without the filters
        warnings.simplefilter("always")
        peft.get_peft_model(tiny_model("llama"), peft.LoraConfig(r=4, target_modules=["q_proj"], lora_bias=True))
    names = {w.category.__name__ for w in seen}
    assert "FutureWarning" in names and any("lora_bias" in str(w.message) for w in seen)


def test_importing_every_module_raises_no_deprecation_of_its_own():
    """Every module of the package imports (in a fresh process) without a deprecation attributed to
    text2lora."""
    code = (
        "import importlib, pkgutil, warnings\n"
        "for c in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):\n"
        "    warnings.filterwarnings('error', category=c, module='text2lora')\n"
        "import text2lora\n"
        "for m in pkgutil.walk_packages(text2lora.__path__, 'text2lora.'):\n"
        "    if m.name.endswith('__main__'):\n"
        "        continue\n"  # running it is the command itself
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except ImportError as e:\n"
        "        if not isinstance(e, ModuleNotFoundError) or (e.name or '').startswith('text2lora'):\n"
        "            raise\n"  # an optional dependency that is not installed (llama_cpp, dspy) is fine
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
