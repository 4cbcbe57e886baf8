"""Tiny random models and tokenizers built from configs, for tests and examples.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in
memory on a few sentences and carries a ChatML chat template, and the models are
randomly initialised from small configs of real architectures.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

__all__ = ["TINY_FAMILIES", "tiny_tokenizer", "tiny_model", "save_tiny_base"]

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

_CORPUS = [
    "Answer the question with yes or no.", "Solve the math word problem step by step.",
    "The quick brown fox jumps over the lazy dog.", "Translate English to French.",
    "def add(a, b):\n    return a + b\n", "Question: What is 2 + 3? Answer: 5",
    "Choose the correct option: A, B, C or D.", "Classify the sentiment of the review.",
    "0123456789 ()[]{}<>=+-*/.,;:!?'\"",
]


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer():
    """A 512-token byte-level BPE tokenizer with a ChatML chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
                                  bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML_TEMPLATE
    return tok


_COMMON = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
               pad_token_id=0, bos_token_id=1, eos_token_id=2)

TINY_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", dict(tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(sliding_window=None)),
    "gemma2": ("Gemma2Config", dict(head_dim=8, sliding_window=64, query_pre_attn_scalar=8)),
    "gemma3": ("Gemma3TextConfig", dict(head_dim=8, sliding_window=64, query_pre_attn_scalar=8)),
    "qwen2": ("Qwen2Config", dict()),
    "qwen3": ("Qwen3Config", dict(head_dim=8)),
    "phi3": ("Phi3Config", dict(pad_token_id=0)),
}


def tiny_model(family: str = "llama", seed: int = 0, num_layers: int = 2):
    """A randomly initialised causal LM of ``family`` with hidden size 32, float32, eval mode."""
    import transformers
    from transformers import AutoModelForCausalLM

    cls_name, extra = TINY_FAMILIES[family]
    cfg = getattr(transformers, cls_name)(**{**_COMMON, **extra, "num_hidden_layers": num_layers})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model.eval()


def save_tiny_base(path: str | Path, family: str = "llama", seed: int = 0, num_layers: int = 2) -> Path:
    """Write a tiny random model + tokenizer as a normal HF directory (loadable by ``load_base``)."""
    path = Path(path)
    model = tiny_model(family, seed, num_layers)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path
