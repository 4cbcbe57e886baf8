"""Metrics as the paper defines them, plus log-likelihood multiple choice.

- Multiple choice (``choice_acc``): the choice with the highest log-likelihood given the prompt.
  Two variants are always computed: ``acc`` ranks choices by the *sum* of their token
  log-probabilities; ``acc_norm`` ranks them by that sum divided by the choice's length in
  characters (as lm-evaluation-harness does), which removes the bias towards short choices.
- GSM8K (``gsm8k``): the last number of a greedy chain-of-thought answer equals the gold answer.
- HumanEval / MBPP (``pass@1``): the greedy completion, run against the benchmark's tests in the
  sandbox (:mod:`text2lora.eval.sandbox`), passes all of them.
- ``exact_match`` (generative BIG-bench/SNI/user tasks): the first line of the answer equals one of
  the accepted targets, ignoring case, surrounding whitespace and a final period.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from ..data import Example
from ..errors import DataError
from .sandbox import Program

__all__ = ["choice_predictions", "extract_last_number", "gsm8k_correct", "exact_match", "extract_code",
           "humaneval_program", "mbpp_program", "code_program", "code_done", "mean"]

_NUM_RE = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def choice_predictions(logprobs: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """``(argmax of summed log-probs, argmax of log-probs per character)`` over the choices.

    Ties go to the first choice, so the result is deterministic.
    """
    if len(logprobs) != len(choices) or not choices:
        raise ValueError(f"got {len(logprobs)} log-likelihoods for {len(choices)} choices")
    norm = [lp / max(1, len(c)) for lp, c in zip(logprobs, choices)]
    return _argmax(logprobs), _argmax(norm)


def _argmax(xs: Sequence[float]) -> int:
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best] or (math.isnan(xs[best]) and not math.isnan(x)):
            best = i
    return best


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` as a plain string (commas, ``$`` and a trailing period removed)."""
    found = _NUM_RE.findall(text)
    if not found:
        return None
    num = found[-1].replace(",", "").replace("$", "").replace(" ", "")
    return num.rstrip(".") or None


def _as_number(s: str) -> float | None:
    try:
        return float(s.replace(",", "").replace("$", "").strip().rstrip("."))
    except ValueError:
        return None


def gsm8k_correct(completion: str, gold: str) -> tuple[bool, str | None]:
    """``(correct, predicted number)``: the last number of ``completion`` equals ``gold`` numerically."""
    pred = extract_last_number(completion)
    if pred is None:
        return False, None
    p, g = _as_number(pred), _as_number(gold)
    if p is None or g is None:
        return pred.strip() == gold.strip(), pred
    return abs(p - g) < 1e-6 * max(1.0, abs(g)), pred


def _norm_answer(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower()).rstrip(".").strip()


def exact_match(completion: str, example: Example) -> bool:
    """First non-empty line of ``completion`` equals one accepted target (normalised)."""
    lines = [ln for ln in completion.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    targets = list(example.meta.get("targets") or []) or [example.target]
    return _norm_answer(first) in {_norm_answer(str(t)) for t in targets}


# ----------------------------------------------------------------------------- code

_FENCE_RE = re.compile(r"```[ \t]*(?:python|py|Python|python3)?[ \t]*\n(.*?)(?:```|$)", re.S)


def extract_code(completion: str) -> str:
    """The code of a model answer.

    The first fenced block with code in it; an answer that starts with code and only *closes* a
    fence is cut there; otherwise the raw text.
    """
    stripped = completion.lstrip()
    if not stripped.startswith("```") and "```" in stripped:
        head = stripped.split("```", 1)[0]
        if head.strip() and re.search(r"^\s*(def|class|import|from)\s", head, re.M):
            return head.rstrip() + "\n"
    for block in _FENCE_RE.findall(completion):
        if block.strip():
            return block.rstrip() + "\n"
    return completion.rstrip() + "\n"


def code_done(completion: str) -> bool:
    """Stop rule for code generation: a fenced block was opened and closed, code was followed by a fence,
    or the answer degenerated into one line repeated 4 times in a row (it cannot pass from there)."""
    s = completion.lstrip()
    n = s.count("```")
    if n >= 2 or (n == 1 and not s.startswith("```")):
        return True
    lines = [ln for ln in s.split("\n")[:-1] if ln.strip()]
    return len(lines) >= 4 and len(set(lines[-4:])) == 1


def _imports(code: str) -> str:
    return "".join(ln + "\n" for ln in code.splitlines() if re.match(r"^(from\s+\S+\s+)?import\s", ln))


def humaneval_program(completion: str, example: Example) -> Program:
    """The sandbox program that passes iff the completion passes the HumanEval problem's ``check``.

    If the answer defines the entry-point function it is used as is (with the prompt's imports);
    otherwise it is treated as the body continuing the prompt. The problem's test code and
    ``check(<entry point>)`` are the checks.
    """
    prompt = example.meta["code_prompt"]
    entry = example.meta["entry_point"]
    code = extract_code(completion)
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M):
        program = _imports(prompt) + code
    else:
        program = prompt + code
    return Program(program, f"{example.meta['test']}\n\ncheck({entry})\n")


def mbpp_program(completion: str, example: Example) -> Program:
    """The sandbox program that passes iff the completion passes every assertion of the MBPP problem.

    The problem's setup code runs after the solution, in the solution's sandbox (MBPP 367's setup builds
    its test trees with the ``Node`` class the solution defines); the assertions are the checks.
    """
    return Program(extract_code(completion), "\n".join(example.meta.get("test_list") or []) + "\n",
                   example.meta.get("test_setup_code") or "")


def code_program(completion: str, example: Example) -> Program:
    """The sandbox program for a HumanEval (has ``entry_point``) or MBPP (has ``test_list``) example."""
    if "entry_point" in example.meta:
        return humaneval_program(completion, example)
    if "test_list" in example.meta:
        return mbpp_program(completion, example)
    raise DataError("pass@1 needs an example with HumanEval ('test', 'entry_point') or MBPP ('test_list') fields; "
                    "give the task another metric or add those fields")


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty sequence."""
    return sum(xs) / len(xs) if xs else float("nan")
