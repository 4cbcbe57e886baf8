"""DSPy integration on a tiny model: task string -> adapter (cached) -> dspy.LM running dspy.Predict / Evaluate."""

from __future__ import annotations

import pytest

dspy = pytest.importorskip("dspy")

from _serve_utils import tiny_generator  # noqa: E402

N = 12


@pytest.fixture(scope="module")
def t2l(tmp_path_factory):
    from text2lora.integrations.dspy import TextToLoRAModule

    base, gen = tiny_generator(tmp_path_factory.mktemp("dspy"), context=2048)  # DSPy prompts are ~450 tokens
    module = TextToLoRAModule.from_generator(base, gen, max_tokens=N, batch_wait_ms=30)
    yield module
    module.close()


def _direct(t2l, lm, adapter) -> str:
    """What the base model with ``adapter`` replies, alone, to the messages ``lm`` last sent."""
    from text2lora.serve.chat import chat

    with t2l.engine.model_lock:
        return chat(t2l.engine.base, lm.history[-1]["messages"], adapter, max_new_tokens=N)


def test_module_turns_a_task_into_a_cached_adapter(t2l):
    from text2lora import LoRAAdapter

    a = t2l(task="Answer arithmetic questions with a number.")
    again = t2l(task="Answer arithmetic questions with a number.")
    other = t2l(task="Translate English to French.")
    assert isinstance(a.adapter, LoRAAdapter) and a.adapter.description == "Answer arithmetic questions with a number."
    assert any(b.abs().sum() > 0 for b in a.adapter.B.values())
    assert a.cache_hit is False and again.cache_hit is True and again.adapter is a.adapter
    assert again.lm is a.lm and a.lm.model == f"text2lora/{a.adapter_id}"
    assert other.adapter_id != a.adapter_id
    assert any(not (other.adapter.A[m] == a.adapter.A[m]).all() for m in a.adapter.A)


def test_lm_runs_dspy_predict_on_the_generated_adapter(t2l):
    from text2lora.integrations.dspy import PlainAdapter

    made = t2l(task="Answer arithmetic questions with a number.")
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=made.lm, adapter=PlainAdapter()):
        adapted = predict(question="What is 2 + 3?").answer
    assert adapted == _direct(t2l, made.lm, made.adapter).strip()
    base_lm = t2l.base_lm()
    with dspy.context(lm=base_lm, adapter=PlainAdapter()):
        plain = predict(question="What is 2 + 3?").answer
    assert plain == _direct(t2l, base_lm, None).strip()
    assert adapted != plain  # the adapter was applied, and only to its own LM
    assert made.lm.history[-1]["usage"].get("completion_tokens", 0) > 0, made.lm.history[-1]["usage"]


def test_dspy_evaluate_runs_threads_in_shared_batches(t2l):
    from text2lora.integrations.dspy import PlainAdapter

    made = t2l(task="Repeat the question.")
    devset = [dspy.Example(question=f"What is {i} + {i}?", answer=str(2 * i)).with_inputs("question")
              for i in range(6)]
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=made.lm, adapter=PlainAdapter()):  # one at a time: the reference answers
        alone = {ex.question: predict(question=ex.question).answer for ex in devset}
    before = t2l.engine.batcher.snapshot()
    with dspy.context(lm=made.lm, adapter=PlainAdapter()):
        result = dspy.Evaluate(devset=devset, metric=lambda ex, pred, trace=None: pred.answer == alone[ex.question],
                               num_threads=6, display_progress=False)(predict)
    after = t2l.engine.batcher.snapshot()
    assert result.score == 100.0  # every threaded answer equals the one the same program gave alone
    assert after["rows"] - before["rows"] == len(devset)
    assert after["batches"] - before["batches"] < len(devset)  # threads shared forward passes
