"""Remove training tasks that overlap the evaluation benchmarks.

Two checks, each giving a readable reason:

1. **Same source data**: the task's name, keywords or original description name one of the
   benchmark datasets (e.g. a task built from BoolQ or from the AI2 Reasoning Challenge).
2. **Long n-gram overlap**: a task whose examples share a word 13-gram (lower-cased word tokens)
   with the benchmark evaluation items, in at least ``min_hits`` examples or ``min_fraction`` of them.

Then, in the tasks that stay, every single example that shares a 13-gram with an evaluation item (the
benchmarks' and those of the reserved sets, :mod:`text2lora.data.reserved`) is removed
(:func:`remove_contaminated_examples`), and the manifest counts what went.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from .records import Example, TaskRecord

__all__ = ["NGRAM", "SOURCE_PATTERNS", "ngram_hashes", "build_index", "build_text_index", "find_contaminated",
           "remove_contaminated_examples"]

#: Word n-gram length of the overlap check.
NGRAM = 13

#: Regular expressions (on lower-cased name, keywords and original description) naming a benchmark's data.
SOURCE_PATTERNS: dict[str, str] = {
    "arc_challenge": r"\b(ai2 reasoning challenge|arc[- ]challenge|ai2 arc)\b",
    "arc_easy": r"\b(arc[- ]easy)\b",
    "boolq": r"\bboolq\b",
    "gsm8k": r"\bgsm[-_ ]?8k\b",
    "hellaswag": r"\bhella[-_ ]?swag\b",
    "openbookqa": r"\bopen[-_ ]?book[-_ ]?qa\b",
    "piqa": r"\bpiqa\b",
    "winogrande": r"\bwino[-_ ]?grande\b",
    "humaneval": r"\bhuman[-_ ]?eval\b",
    "mbpp": r"\bmbpp\b",
}

_WORD = re.compile(r"\w+")


def ngram_hashes(text: str, n: int = NGRAM) -> set[int]:
    """Hashes of the word n-grams of ``text`` (lower-cased ``\\w+`` tokens). An n-gram made only of numbers and
    single characters (``0 0 0 ...``, a grid, a board's column letters ``a b c ...``) says nothing about where a
    text comes from and is left out."""
    words = _WORD.findall(text.lower())
    grams = (words[i:i + n] for i in range(len(words) - n + 1))
    return {hash(" ".join(gram)) for gram in grams if not all(w.isdigit() or len(w) == 1 for w in gram)}


def _example_text(ex: Example) -> str:
    return f"{ex.prompt}\n{ex.target}"


def build_index(benchmarks: Iterable[TaskRecord], n: int = NGRAM) -> dict[int, str]:
    """Map n-gram hash -> benchmark name, over the evaluation (``test``) items of ``benchmarks``."""
    index: dict[int, str] = {}
    for rec in benchmarks:
        for ex in rec.splits.get("test", []):
            for h in ngram_hashes(_example_text(ex), n):
                index.setdefault(h, rec.name)
    return index


def source_match(rec: TaskRecord) -> str | None:
    """The benchmark whose data ``rec`` names as its source, if any."""
    text = " ".join([rec.name, " ".join(rec.info.get("keywords", [])),
                     str(rec.info.get("original_description", ""))]).lower()
    text = re.sub(r"[_/]", " ", text)  # "subtask029_winogrande_x" -> word boundaries around "winogrande"
    for bench, pattern in SOURCE_PATTERNS.items():
        if re.search(pattern, text):
            return bench
    return None


def find_contaminated(tasks: Iterable[TaskRecord], index: dict[int, str], *, n: int = NGRAM,
                      min_hits: int = 5, min_fraction: float = 0.01) -> dict[str, str]:
    """``{task name: reason}`` for every task overlapping the benchmarks (see module docstring)."""
    out: dict[str, str] = {}
    for rec in tasks:
        bench = source_match(rec)
        if bench:
            out[rec.name] = f"same source data as {bench} (named in the task's name/keywords/description)"
            continue
        if not index:
            continue
        hits: Counter[str] = Counter()
        n_ex = 0
        for exs in rec.splits.values():
            for ex in exs:
                n_ex += 1
                found = {index[h] for h in ngram_hashes(_example_text(ex), n) if h in index}
                hits.update(found)
        if not hits:
            continue
        bench, count = hits.most_common(1)[0]
        if count >= min_hits or count >= max(1.0, min_fraction * n_ex):
            out[rec.name] = f"{count} of {n_ex} examples share a {n}-word sequence with {bench} evaluation items"
    return out


def build_text_index(texts: dict[str, list[str]], n: int = NGRAM, index: dict[int, str] | None = None
                     ) -> dict[int, str]:
    """Add the word n-grams of plain evaluation texts (``{set name: [item text]}``) to ``index``."""
    index = {} if index is None else index
    for name, items in texts.items():
        for text in items:
            for h in ngram_hashes(text, n):
                index.setdefault(h, name)
    return index


def remove_contaminated_examples(tasks: Iterable[TaskRecord], index: dict[int, str], *, n: int = NGRAM
                                 ) -> dict[str, dict[str, int]]:
    """Drop, in place, every example of ``tasks`` that shares a word ``n``-gram with an item of ``index``.

    Returns ``{task name: {evaluation set: examples removed}}`` for the tasks that lost any.
    """
    removed: dict[str, dict[str, int]] = {}
    for rec in tasks:
        for split in list(rec.splits):
            kept = []
            for ex in rec.splits[split]:
                hit = next((index[h] for h in ngram_hashes(_example_text(ex), n) if h in index), None)
                if hit is None:
                    kept.append(ex)
                else:
                    counts = removed.setdefault(rec.name, {})
                    counts[hit] = counts.get(hit, 0) + 1
            if len(kept) != len(rec.splits[split]):
                rec.splits[split] = kept
    return removed
