"""Tiny random models and tokenizers built from configs, for tests and examples.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in
memory on a few sentences and carries a ChatML chat template, and the models are
randomly initialised from small configs of real architectures. A tiny Llama can also
be written as a llama.cpp GGUF file (:func:`save_tiny_gguf`), for tests of the
llama.cpp paths.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

__all__ = ["TINY_FAMILIES", "tiny_tokenizer", "tiny_model", "save_tiny_base", "save_tiny_gguf"]

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


def save_tiny_gguf(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Write a tiny Llama (:func:`tiny_model`, or one loaded from :func:`save_tiny_base`) and its byte-level BPE
    tokenizer as a float32 GGUF file that llama.cpp runs: the layout of llama.cpp's own converter (tensor names
    from the ``gguf`` package's map, q/k rows in its rotary order, the vocabulary padded to the embedding's
    rows), so a LoRA adapter exported for it (:func:`text2lora.formats.gguf.save_gguf`) applies as in PyTorch.
    """
    import json

    import gguf

    from ..formats.gguf import _rope_rows

    cfg = model.config
    if cfg.model_type != "llama":
        raise ValueError(f"save_tiny_gguf writes Llama models only, not {cfg.model_type!r}")
    path = Path(path)
    n_layers, n_head, n_kv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": getattr(cfg, "rope_theta", 10000.0)}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(cfg.hidden_size // n_head)
    w.add_rope_freq_base(float(rope["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # the vocabulary, in id order, padded to the embedding's rows as llama.cpp's converter pads it
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    tokens, types = [], []
    for i in range(cfg.vocab_size):
        tokens.append(vocab.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.CONTROL if i in special else
                     gguf.TokenType.NORMAL if i in vocab else gguf.TokenType.UNUSED)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_add_bos_token(False)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    for key, t in model.state_dict().items():
        if key == "lm_head.weight" and getattr(cfg, "tie_word_embeddings", False):
            continue  # llama.cpp uses the token embedding as the output layer when there is none
        t = t.detach().float().cpu()
        if key.endswith(("q_proj.weight", "k_proj.weight")):
            t = _rope_rows(t, n_head if "q_proj" in key else n_kv)
        name = names.get_name(key.removesuffix(".weight"))
        if name is None:
            raise ValueError(f"no GGUF name for {key}")
        w.add_tensor(name + ".weight", t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
