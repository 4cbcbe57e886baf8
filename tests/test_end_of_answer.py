"""One end-of-answer definition for every family: the chat template's end-of-turn token plus the EOS ids.

Each family gets a tiny tokenizer built offline (the project's tiny BPE vocabulary plus the family's
special tokens) carrying the family's real chat template. The token expected to end an answer is
written here as it appears in the template text (``<end_of_turn>`` for Gemma, ``<|eot_id|>`` for
Llama 3, ``<|im_end|>`` for Qwen, ``<|end|>`` for Phi-3), never taken from the code under test. In
every family the tokenizer's EOS is another token, so code that stops at the EOS only fails here.
"""

from __future__ import annotations

import pytest
import torch

from text2lora.base import BaseModel, discover_spec, end_of_answer_ids, end_of_turn_id

pytestmark = pytest.mark.usefixtures("one_thread")

# google/gemma-2b-it (Gemma 2 and Gemma 3 text models use the same turn markers)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Qwen/Qwen2-0.5B-Instruct (Qwen 1.5 / 2 ChatML with a default system turn)
QWEN = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# microsoft/Phi-3-mini-4k-instruct
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# family -> (tiny model family, chat template, bos, eos, pad, other special tokens, the end-of-turn token)
FAMILIES = {
    "gemma": ("gemma2", GEMMA, "<bos>", "<eos>", "<pad>", ["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
    "llama3": ("llama", LLAMA3, "<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>",
               ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
    "qwen": ("qwen2", QWEN, None, "<|endoftext|>", "<|endoftext|>", ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    "phi3": ("phi3", PHI3, "<s>", "<|endoftext|>", "<|endoftext|>",
             ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|end|>"),
}


def family_tokenizer(family: str):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from text2lora.testing.tiny import _tokenizer_json

    _, template, bos, eos, pad, extra, eot = FAMILIES[family]
    assert f"{eot}" in template  # the expected token is the template's own text
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()), bos_token=bos,
                                  eos_token=eos, pad_token=pad, additional_special_tokens=extra)
    tok.chat_template = template
    return tok


def family_base(family: str) -> BaseModel:
    """A tiny random model of the family whose vocabulary covers the family tokenizer; its generation
    config lists only the tokenizer's EOS (as older Gemma and Llama 3 releases did)."""
    from text2lora.testing import tiny_model

    tok = family_tokenizer(family)
    model = tiny_model(FAMILIES[family][0])
    model.resize_token_embeddings(len(tok))
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
    model.requires_grad_(False)
    return BaseModel(model=model, tokenizer=tok, spec=discover_spec(model, f"tiny-{family}", ("o_proj",)))


def eot_of(tok, family: str) -> int:
    tid = tok.convert_tokens_to_ids(FAMILIES[family][-1])
    assert tid != tok.unk_token_id and tid != tok.eos_token_id
    return tid


@pytest.mark.parametrize("family", list(FAMILIES))
def test_end_ids_include_the_templates_end_of_turn(family):
    from transformers import GenerationConfig

    tok = family_tokenizer(family)
    eot = eot_of(tok, family)
    assert end_of_turn_id(tok) == eot
    gc = GenerationConfig(eos_token_id=tok.eos_token_id)
    ids = end_of_answer_ids(tok, gc)
    assert ids[0] == eot and tok.eos_token_id in ids and len(ids) == len(set(ids)) == 2
    # a generation config that lists several ids keeps them all
    other = tok.convert_tokens_to_ids(FAMILIES[family][5][0])
    assert set(end_of_answer_ids(tok, GenerationConfig(eos_token_id=[tok.eos_token_id, other]))) == {
        eot, tok.eos_token_id, other}


def test_a_template_without_an_end_of_turn_token_falls_back_to_eos():
    tok = family_tokenizer("qwen")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
    assert end_of_turn_id(tok) == tok.eos_token_id
    assert end_of_answer_ids(tok) == [tok.eos_token_id]
    tok.chat_template = FAMILIES["qwen"][1]  # a changed template is read again, not served from a cache
    assert end_of_turn_id(tok) == eot_of(tok, "qwen")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_labels_end_with_the_end_of_turn_token(family):
    from text2lora.data import Example
    from text2lora.train.batches import encode_examples

    tok = family_tokenizer(family)
    eot = eot_of(tok, family)
    tb = encode_examples(tok, [Example("What is 2 + 3?", "5"), Example("Answer yes or no.", "yes it is")])
    for i in range(2):
        labels = tb.labels[i][tb.labels[i] != -100].tolist()
        assert labels[-1] == eot and labels.count(eot) == 1
        assert tb.input_ids[i][int(tb.attention_mask[i].sum()) - 1] == eot  # the row's last real token
    no_eos = encode_examples(tok, [Example("What is 2 + 3?", "5")], eos=False)
    assert eot not in no_eos.labels[0].tolist()


class _Forced:
    """Hooks that make a random model answer ``word`` then the end-of-turn token, then ``word`` again:
    the next token is ``eot`` right after ``word``, else ``word``. An answer that does not stop at the
    end-of-turn token therefore repeats ``word`` until ``max_new_tokens``."""

    def __init__(self, model, word: int, eot: int):
        self.word, self.eot, self.last = word, eot, None
        self.handles = [model.get_input_embeddings().register_forward_hook(self._seen),
                        model.get_output_embeddings().register_forward_hook(self._bias)]

    def _seen(self, module, inputs, output):
        self.last = inputs[0][:, -1]

    def _bias(self, module, inputs, output):
        target = torch.where(self.last == self.word, self.eot, self.word)
        bias = torch.zeros(output.shape[0], output.shape[-1], dtype=output.dtype)
        bias[torch.arange(len(target)), target] = 1e4
        return output + (bias if output.dim() == 2 else bias[:, None, :])

    def remove(self):
        for h in self.handles:
            h.remove()


def _word(tok) -> int:
    return tok("yes", add_special_tokens=False)["input_ids"][0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_evaluation_decoding_stops_at_the_end_of_turn(family):
    from text2lora.eval.scoring import generate

    base = family_base(family)
    tok = base.tokenizer
    word, eot = _word(tok), eot_of(tok, family)
    forced = _Forced(base.model, word, eot)
    try:
        prompts = [base.chat_prompt("Is the sky blue?"), base.chat_prompt("Answer: is 2 + 2 = 4 true or not?")]
        out = generate(base, prompts, max_new_tokens=6, batch_size=2)
    finally:
        forced.remove()
    assert out == [tok.decode([word])] * 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_chat_stops_at_the_end_of_turn(family):
    from text2lora.serve.chat import chat

    base = family_base(family)
    tok = base.tokenizer
    word, eot = _word(tok), eot_of(tok, family)
    forced = _Forced(base.model, word, eot)
    try:
        reply = chat(base, "Is the sky blue?", max_new_tokens=6)
    finally:
        forced.remove()
    assert reply == tok.decode([word])


@pytest.mark.parametrize("family", ["gemma", "llama3"])
def test_server_stop_set_holds_the_end_of_turn(family):
    from text2lora.serve.batcher import Batcher

    base = family_base(family)
    batcher = Batcher(base)
    try:
        assert {eot_of(base.tokenizer, family), base.tokenizer.eos_token_id} <= batcher.eos_ids
    finally:
        batcher.close()
