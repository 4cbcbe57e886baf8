"""Answer forms: what a description can ask an answer to look like, as data and code.

A form is named (``FORMS``) and takes parameters (a mapping; which keys each form needs is in
``Form.params``). For each form:

- ``clause(params, variant=0)``: the sentence a description adds to state the form ("Answer with
  one word."); several phrasings per form, chosen by ``variant`` (taken modulo their number), so
  training can vary the wording and an evaluation can keep one apart;
- ``check(answer, params)``: whether an answer takes the form. It never raises: an answer that
  cannot be parsed (broken JSON, code with a syntax error) takes no form and scores ``False``;
- ``render(answer, params)``: a plain short answer rewritten into the form (a training target), or
  ``None`` when it cannot be (a three-word answer as one word); a rendered answer always passes
  ``check``.

Forms: ``one_word``, ``max_words`` (``n``), ``all_caps``, ``json_key`` (``key``), ``bullets``
(``n``), ``number``, ``python_function`` (``name``; the code is parsed with :mod:`ast`, never run),
``label`` (``labels``). A JSON answer is the whole answer, optionally in one fenced block; a Python
answer is its first fenced block (to its end when the fence is never closed), else the whole answer. :func:`normalize` / :func:`matches` are the normalised exact match of a
short answer against its gold answers.

Parameters are checked by :func:`check_params` (a :class:`~text2lora.errors.DataError` naming the
form and the parameter); the per-form functions assume checked parameters.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ..errors import DataError

__all__ = ["Form", "FORMS", "get_form", "check_params", "clause", "clauses", "check", "render", "normalize",
           "matches", "split_items"]

Params = Mapping[str, Any]

# Quotes, backticks and spaces around an answer, and the punctuation that may end it, are not part of it.
_EDGE = " \t\r\n\"'`“”‘’"
_END_PUNCT = ".!?;:,"
_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_BULLET_RE = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+(\S.*)$")
_FENCE_RE = re.compile(r"^```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)\n?```$", re.S)
_FIRST_FENCE_RE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)(?:```|$)", re.S)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _core(answer: str) -> str:
    """The answer without surrounding whitespace, quotes, and final punctuation."""
    s = answer.strip(_EDGE)
    while s and s[-1] in _END_PUNCT:
        s = s[:-1].rstrip(_EDGE)
    return s


def _words(answer: str) -> list[str]:
    """The words of an answer: whitespace-separated pieces that hold a letter or a digit."""
    return [w for w in answer.split() if any(c.isalnum() for c in w)]


def _number(text: str) -> str | None:
    """``text`` as a canonical number string (``"1,000.50"`` -> ``"1000.5"``), or ``None`` if it is not one number."""
    s = _core(text)
    if not _NUMBER_RE.fullmatch(s):
        return None
    s = s.replace(",", "").lstrip("+")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("", "-", "-0"):
        s = "0"
    if s.startswith("-."):
        s = "-0" + s[1:]
    elif s.startswith("."):
        s = "0" + s
    return s


def _unfence(answer: str) -> str:
    """The content of an answer that is one fenced block (```lang ... ```), else the stripped answer."""
    s = answer.strip()
    m = _FENCE_RE.match(s)
    return m.group(2) if m else s


# ----------------------------------------------------------------------------- exact match

def normalize(text: str) -> str:
    """The form of a short answer that exact match compares: lower case, one space between words, no
    surrounding quotes or final punctuation, numbers written canonically (``"1,200.0"`` -> ``"1200"``)."""
    s = re.sub(r"\s+", " ", _core(str(text))).lower()
    num = _number(s)
    return num if num is not None else s


def matches(answer: str, golds: str | Iterable[str]) -> bool:
    """Whether the whole answer, normalised, equals one of the gold answers, normalised."""
    golds = [golds] if isinstance(golds, str) else list(golds)
    got = normalize(answer)
    return bool(got) and any(got == normalize(g) for g in golds)


def split_items(answer: str) -> list[str]:
    """The items of a plain answer that lists several: one a line, or separated by commas/semicolons
    (a final "and" counts as a separator). Items are stripped of bullets and final punctuation."""
    text = answer.strip()
    if "\n" in text:
        parts = text.splitlines()
    else:
        parts = re.split(r"\s*[;,]\s*(?:and\s+)?|\s+and\s+", text)
    items = []
    for p in parts:
        m = _BULLET_RE.match(p)
        p = _core(m.group(1) if m else p)
        if p:
            items.append(p)
    return items


# ----------------------------------------------------------------------------- the forms

@dataclass(frozen=True)
class Form:
    """One answer form: its parameters, the phrasings of its clause, its checker and its renderer."""

    name: str
    params: tuple[str, ...]
    phrasings: tuple[str, ...]   # str.format templates over the parameters (``{labels}`` is pre-joined)
    checker: Callable[[str, Params], bool]
    renderer: Callable[[str, Params], "str | None"]

    def clauses(self, params: Params) -> list[str]:
        """Every phrasing of this form's clause for ``params``."""
        values = dict(params)
        if "labels" in values:
            values["labels"] = _join_labels(values["labels"])
        return [p.format(**values) for p in self.phrasings]

    def clause(self, params: Params, variant: int = 0) -> str:
        """One phrasing of the clause (``variant`` modulo the number of phrasings)."""
        return self.clauses(params)[variant % len(self.phrasings)]

    def check(self, answer: str, params: Params) -> bool:
        """Whether ``answer`` takes this form; ``False`` (never an exception) for anything unparseable."""
        if not isinstance(answer, str):
            return False
        try:
            return bool(self.checker(answer, params))
        except (ValueError, SyntaxError, RecursionError, MemoryError):  # what parsing an answer (JSON, Python)
            return False  # raises on text that is not one; any other exception is a bug in the checker

    def render(self, answer: str, params: Params) -> str | None:
        """``answer`` rewritten into this form, or ``None`` when it cannot be."""
        out = self.renderer(answer, params)
        return out if out is not None and self.check(out, params) else None


def _join_labels(labels: Iterable[str]) -> str:
    labels = [str(x) for x in labels]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]


def _check_one_word(a: str, p: Params) -> bool:
    s = _core(a)
    return len(s.split()) == 1 and len(_words(s)) == 1


def _render_one_word(a: str, p: Params) -> str | None:
    s = _core(a)
    return s if _check_one_word(s, p) else None


def _check_max_words(a: str, p: Params) -> bool:
    return 1 <= len(_words(a)) <= int(p["n"])


def _render_max_words(a: str, p: Params) -> str | None:
    s = a.strip()
    return s if _check_max_words(s, p) else None


def _check_all_caps(a: str, p: Params) -> bool:
    s = a.strip()
    return any(c.isalpha() for c in s) and s == s.upper() and s != s.lower()


def _render_all_caps(a: str, p: Params) -> str | None:
    return a.strip().upper()


def _check_json_key(a: str, p: Params) -> bool:
    obj = json.loads(_unfence(a))
    return isinstance(obj, dict) and p["key"] in obj


def _render_json_key(a: str, p: Params) -> str | None:
    s = _core(a)
    if not s:
        return None
    num = _number(s)
    value: Any = s if num is None else (float(num) if "." in num else int(num))
    return json.dumps({p["key"]: value}, ensure_ascii=False)


def _check_bullets(a: str, p: Params) -> bool:
    lines = [ln for ln in a.strip().splitlines() if ln.strip()]
    return len(lines) == int(p["n"]) and all(_BULLET_RE.match(ln) for ln in lines)


def _render_bullets(a: str, p: Params) -> str | None:
    items = split_items(a)
    return "\n".join(f"- {it}" for it in items) if len(items) == int(p["n"]) else None


def _check_number(a: str, p: Params) -> bool:
    return _number(a) is not None


def _render_number(a: str, p: Params) -> str | None:
    return _number(a)


def _check_python_function(a: str, p: Params) -> bool:
    fenced = _FIRST_FENCE_RE.search(a)
    tree = ast.parse(fenced.group(1) if fenced else a.strip())
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == p["name"]
               for node in tree.body)


def _render_python_function(a: str, p: Params) -> str | None:
    s = _core(a)
    if not s:
        return None
    num = _number(s)
    value = num if num is not None else repr(s)
    return f"def {p['name']}():\n    return {value}\n"


def _check_label(a: str, p: Params) -> bool:
    return normalize(a) in {normalize(x) for x in p["labels"]}


def _render_label(a: str, p: Params) -> str | None:
    got = normalize(a)
    return next((str(x) for x in p["labels"] if normalize(x) == got), None)


FORMS: dict[str, Form] = {f.name: f for f in [
    Form("one_word", (), (
        "Answer with one word.",
        "Reply with a single word.",
        "Give a one-word answer.",
        "Your answer must be exactly one word.",
    ), _check_one_word, _render_one_word),
    Form("max_words", ("n",), (
        "Answer in at most {n} words.",
        "Keep the answer to {n} words or fewer.",
        "Reply in no more than {n} words.",
        "Use {n} words at most.",
    ), _check_max_words, _render_max_words),
    Form("all_caps", (), (
        "Write the answer in capital letters only.",
        "Answer entirely in upper case.",
        "Reply using only capital letters.",
        "Give the answer in ALL CAPS.",
    ), _check_all_caps, _render_all_caps),
    Form("json_key", ("key",), (
        'Answer with a JSON object whose "{key}" key holds the answer.',
        'Reply with JSON only: an object with the answer under the key "{key}".',
        'Return a JSON object like {{"{key}": ...}} and nothing else.',
        'Format the answer as a JSON object with the field "{key}".',
    ), _check_json_key, _render_json_key),
    Form("bullets", ("n",), (
        "Answer with a bulleted list of exactly {n} items, one per line, each starting with '- '.",
        "Reply with {n} bullet points and nothing else.",
        "Give exactly {n} items as a bulleted list.",
        "List {n} items, one bullet per line, with no other text.",
    ), _check_bullets, _render_bullets),
    Form("number", (), (
        "Answer with a number only.",
        "Reply with just the number.",
        "Give only the numeric answer, with no words.",
        "Output the number and nothing else.",
    ), _check_number, _render_number),
    Form("python_function", ("name",), (
        "Answer with a Python function named {name}.",
        "Write the answer as Python code that defines a function called {name}.",
        "Reply with the definition of a Python function {name}.",
        "Give Python source code defining {name}, and nothing else.",
    ), _check_python_function, _render_python_function),
    Form("label", ("labels",), (
        "Answer with one of: {labels}.",
        "Reply with exactly one of these labels: {labels}.",
        "The answer must be {labels}.",
        "Choose one label from {labels} and answer with it alone.",
    ), _check_label, _render_label),
]}


def get_form(name: str) -> Form:
    """The form named ``name``; a :class:`DataError` listing the forms if there is none."""
    try:
        return FORMS[name]
    except KeyError:
        raise DataError(f"unknown answer form {name!r}; use one of {', '.join(FORMS)}") from None


def check_params(name: str, params: Params | None) -> dict[str, Any]:
    """The parameters of form ``name``, checked: every key it needs, of the right kind, and no other.

    Raises :class:`DataError` naming the form and the parameter.
    """
    form = get_form(name)
    params = dict(params or {})
    missing = [k for k in form.params if k not in params]
    extra = [k for k in params if k not in form.params]
    if missing or extra:
        want = ", ".join(form.params) or "no parameters"
        raise DataError(f"answer form {name!r} takes {want}; got {', '.join(sorted(params)) or 'none'}")
    if "n" in params and (not isinstance(params["n"], int) or isinstance(params["n"], bool) or params["n"] < 1):
        raise DataError(f"answer form {name!r}: 'n' must be a positive whole number, got {params['n']!r}")
    for key in ("key", "name"):
        if key in params and (not isinstance(params[key], str) or not params[key].strip()):
            raise DataError(f"answer form {name!r}: {key!r} must be a non-empty string, got {params[key]!r}")
    if "name" in params and not _IDENT_RE.match(params["name"]):
        raise DataError(f"answer form {name!r}: 'name' must be a Python identifier, got {params['name']!r}")
    if "labels" in params:
        labels = params["labels"]
        if (not isinstance(labels, (list, tuple)) or len(labels) < 2
                or not all(isinstance(x, str) and x.strip() for x in labels)):
            raise DataError(f"answer form {name!r}: 'labels' must be a list of at least two non-empty strings, "
                            f"got {labels!r}")
        if len({normalize(x) for x in labels}) != len(labels):
            raise DataError(f"answer form {name!r}: two labels of {labels!r} are the same once normalised")
        params["labels"] = list(labels)
    return params


def clauses(name: str, params: Params | None = None) -> list[str]:
    """Every phrasing of form ``name``'s clause."""
    return get_form(name).clauses(check_params(name, params))


def clause(name: str, params: Params | None = None, variant: int = 0) -> str:
    """The sentence a description adds to ask for form ``name`` (phrasing ``variant``)."""
    return get_form(name).clause(check_params(name, params), variant)


def check(name: str, answer: str, params: Params | None = None) -> bool:
    """Whether ``answer`` takes form ``name``; never raises for any answer."""
    return get_form(name).check(answer, check_params(name, params))


def render(name: str, answer: str, params: Params | None = None) -> str | None:
    """``answer`` rewritten into form ``name``, or ``None`` when it cannot be."""
    return get_form(name).render(answer, check_params(name, params))
