"""Word-label tasks: a bare input answered with one of the labels the description names, written by this project.

The other training collections hardly ever answer a bare input with a word label: their short answers are
digits, letters, Y/N or copied text, so a generator trained on them answers "ambivalent" where a
description asks for "positive, negative or neutral". These tasks are generated: each task is one rule
over a small kind of input (a clock time, a year, an RGB colour, a word, a list of numbers, ...) that
maps it to one of two to five word labels, and the label is computed by the rule, so every target is
right by construction. Only the description names the labels and the rule; the prompt is the bare
input (``"19:45"`` -> ``evening``).

None of these tasks is one of the bare-input suite's label tasks (sentiment, topic, divisibility,
primes, claims, language, entailment, animal class, continent, sign, tense, sentence type), no label
is one of the suite's labels, and the words drawn as inputs are the encoder's vocabulary minus every
word of the suite's word lists, so the suite stays held out.

Task names are ``labels/<kind>``; :data:`HELDOUT_TASKS` are held out whole (validation and the
held-out-task table). ``info["labels"]`` lists a task's labels in the order its descriptions name them.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...encoders import DEFAULT_ENCODER, _embedded_encoder_path
from ..records import Example, TaskRecord
from .generated import Maker, build_generated, pick

__all__ = ["KINDS", "HELDOUT_TASKS", "Kind", "build_labels", "vocabulary"]

#: The word lists of the bare-input suite: no input word of this collection is one of theirs.
SUITE_WORDS_FILE = Path(__file__).resolve().parents[2] / "resources" / "instruct" / "words.yaml"

HELDOUT_TASKS: tuple[str, ...] = ("labels/leap_year", "labels/triangle", "labels/http_status")

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MOVES = ("rock", "paper", "scissors")
_BEATS = {"rock": "scissors", "paper": "rock", "scissors": "paper"}
_FILES = {"image": ("png", "jpg", "gif", "bmp"), "audio": ("mp3", "wav", "flac", "ogg"),
          "video": ("mp4", "mkv", "avi", "mov"), "document": ("pdf", "docx", "txt", "odt"),
          "code": ("py", "js", "c", "java")}


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """The input words: lower-case ASCII words of 3 to 12 letters from the default encoder's vocabulary,
    minus every word of the suite's word lists; sorted, so the same on every machine."""
    vocab = (_embedded_encoder_path(DEFAULT_ENCODER) / "vocab.txt").read_text(encoding="utf-8").split()
    banned = {w.lower() for w in re.findall(r"[A-Za-z]+", SUITE_WORDS_FILE.read_text(encoding="utf-8"))}
    return tuple(sorted({w for w in vocab if w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 12
                         and w not in banned}))


# ----------------------------------------------------------------------------- the rules
# Each rule draws one input from ``r`` (words from ``w``) and returns it with its label.

Rule = Callable[[random.Random, "tuple[str, ...]"], "tuple[str, str]"]


def _parity(r, w):
    n = r.randint(0, 99999)
    return str(n), "even" if n % 2 == 0 else "odd"


def _compare(r, w):
    a = r.randint(0, 999)
    b = a if r.random() < 0.2 else r.randint(0, 999)
    return f"{a}, {b}", "greater" if a > b else "smaller" if a < b else "equal"


def _first_letter(r, w):
    vowel = r.random() < 0.5  # as many of each: four words in five start with a consonant
    word = pick(r, w)
    while (word[0] in "aeiou") != vowel:
        word = pick(r, w)
    return word, "vowel" if word[0] in "aeiou" else "consonant"


def _palindrome(r, w):
    if r.random() < 0.5:
        half = "".join(pick(r, "abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 4)))
        word = half + (pick(r, "aeiou") if r.random() < 0.5 else "") + half[::-1]
    else:
        word = pick(r, w)
    return word, "palindrome" if word == word[::-1] else "ordinary"


def _list_order(r, w):
    xs = r.sample(range(1, 100), r.randint(4, 7))
    kind = pick(r, ("ascending", "descending", "unsorted"))
    if kind != "unsorted":
        xs.sort(reverse=kind == "descending")
    elif xs in (sorted(xs), sorted(xs, reverse=True)):
        xs[0], xs[1] = xs[1], xs[0]
    return ", ".join(map(str, xs)), ("ascending" if xs == sorted(xs) else "descending" if xs == sorted(xs, reverse=True)
                                     else "unsorted")


def _digits(r, w):
    k = r.randint(1, 4)
    n = r.randint(10 ** (k - 1) if k > 1 else 0, 10 ** k - 1)
    return str(n), ("single", "double", "triple", "quadruple")[len(str(n)) - 1]


def _letter_case(r, w):
    word = pick(r, w)
    kind = pick(r, ("upper", "lower", "mixed"))
    if kind == "upper":
        word = word.upper()
    elif kind == "mixed":
        word = "".join(c.upper() if r.random() < 0.5 else c for c in word)
        if word.isupper() or word.islower():
            word = word[0].upper() + word[1:].lower()
    return word, "upper" if word.isupper() else "lower" if word.islower() else "mixed"


def _day_part(r, w):
    h, m = r.randint(0, 23), pick(r, (0, 15, 30, 45))
    label = "night" if h < 5 else "morning" if h < 12 else "afternoon" if h < 17 else "evening" if h < 22 else "night"
    return f"{h:02d}:{m:02d}", label


def _season(r, w):
    mi = r.randrange(12)
    day = r.randint(1, _DAYS[mi])
    return f"{_MONTHS[mi]} {day}", ("winter", "spring", "summer", "autumn")[((mi + 1) % 12) // 3]


def _temperature(r, w):
    t = r.randint(-25, 45)
    return f"{t} °C", "freezing" if t < 0 else "cold" if t < 10 else "mild" if t < 20 else "warm" if t < 30 else "hot"


def _triangle(r, w):
    kind = pick(r, ("equilateral", "isosceles", "scalene"))
    a = r.randint(3, 20)
    if kind == "equilateral":
        s = [a, a, a]
    elif kind == "isosceles":
        s = [a, a, pick(r, [x for x in range(2, 2 * a) if x != a])]
    else:
        s = [a, *r.sample(range(a + 1, 2 * a), 2)]
    r.shuffle(s)
    return ", ".join(map(str, s)), {1: "equilateral", 2: "isosceles", 3: "scalene"}[len(set(s))]


def _angle(r, w):
    kind = pick(r, ("acute", "right", "obtuse", "straight", "reflex"))
    deg = {"acute": r.randint(1, 89), "right": 90, "obtuse": r.randint(91, 179), "straight": 180,
           "reflex": r.randint(181, 359)}[kind]
    return f"{deg} degrees", kind


def _exam(r, w):
    s = r.randint(0, 100)
    return f"{s}/100", "pass" if s >= 50 else "fail"


def _brackets(r, w):
    s = [pick(r, "()") for _ in range(2 * r.randint(2, 7))]
    if r.random() < 0.5:  # half of them balanced: a random walk that never goes below zero
        s, depth = [], 0
        n = r.randint(2, 7)
        while len(s) + depth < 2 * n:
            step = "(" if depth == 0 or r.random() < 0.5 else ")"
            depth += 1 if step == "(" else -1
            s.append(step)
        s += [")"] * depth
    text = "".join(s)
    depth, ok = 0, True
    for c in text:
        depth += 1 if c == "(" else -1
        ok = ok and depth >= 0
    return text, "balanced" if ok and depth == 0 else "unbalanced"


def _quadrant(r, w):
    x = pick(r, (-1, 1)) * r.randint(1, 50)
    y = pick(r, (-1, 1)) * r.randint(1, 50)
    return f"({x}, {y})", {(True, True): "first", (False, True): "second", (False, False): "third",
                           (True, False): "fourth"}[(x > 0, y > 0)]


def _alphabetical(r, w):
    a, b = r.sample(w, 2)
    return f"{a} / {b}", "before" if a < b else "after"


def _leap(r, w):
    y = r.randint(1600, 2400)
    if r.random() < 0.3:
        y -= y % 4
    return str(y), "leap" if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else "common"


def _compass(r, w):
    heads = ("north", "east", "south", "west")
    start = r.randrange(4)
    turns = [pick(r, ("left", "right", "around")) for _ in range(r.randint(1, 4))]
    h = start
    for t in turns:
        h = (h + {"left": -1, "right": 1, "around": 2}[t]) % 4
    return f"facing {heads[start]}; turn " + ", then ".join(turns), heads[h]


def _rps(r, w):
    rounds = [(pick(r, _MOVES), pick(r, _MOVES)) for _ in range(3)]
    first = sum(_BEATS[a] == b for a, b in rounds)
    second = sum(_BEATS[b] == a for a, b in rounds)
    return "; ".join(f"{a} vs {b}" for a, b in rounds), "first" if first > second else "second" if second > first else "draw"


def _sequence(r, w):
    kind = pick(r, ("arithmetic", "geometric", "neither"))
    a, n = r.randint(1, 9), r.randint(4, 6)
    if kind == "arithmetic":
        d = r.randint(1, 12)
        xs = [a + i * d for i in range(n)]
    elif kind == "geometric":
        q = r.randint(2, 4)
        xs = [a * q ** i for i in range(n)]
    else:
        xs = sorted(r.sample(range(1, 200), n))
    steps = {y - x for x, y in zip(xs, xs[1:])}
    ratio = all(y * xs[0] == x * xs[1] for x, y in zip(xs, xs[1:]))
    return ", ".join(map(str, xs)), "arithmetic" if len(steps) == 1 else "geometric" if ratio else "neither"


def _repeats(r, w):
    word = pick(r, w)
    return word, "repeated" if len(set(word)) < len(word) else "unique"


def _dominant(r, w):
    ch = r.randrange(3)
    vals = [r.randint(0, 150) for _ in range(3)]
    vals[ch] = r.randint(max(vals) + 20, 255)
    return f"rgb({vals[0]}, {vals[1]}, {vals[2]})", ("red", "green", "blue")[ch]


def _file_kind(r, w):
    kind = pick(r, sorted(_FILES))
    return f"{pick(r, w)}_{r.randint(1, 99)}.{pick(r, _FILES[kind])}", kind


def _magnitude(r, w):
    k = pick(r, ("small", "medium", "large"))
    n = {"small": r.randint(0, 99), "medium": r.randint(100, 9999), "large": r.randint(10000, 9999999)}[k]
    return str(n), k


def _char_kind(r, w):
    k = pick(r, ("letter", "digit", "punctuation"))
    c = pick(r, {"letter": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "digit": "0123456789",
                 "punctuation": "!?.,;:-'\"()"}[k])
    return f"'{c}'", k


def _status(r, w):
    code = pick(r, (r.randint(100, 103), r.randint(200, 206), r.randint(300, 308), r.randint(400, 451),
                    r.randint(500, 511)))
    return str(code), ("informational", "success", "redirect", "client", "server")[code // 100 - 1]


def _word_length(r, w):
    word = pick(r, w)
    return word, "short" if len(word) <= 4 else "medium" if len(word) <= 7 else "long"


def _time_order(r, w):
    a, b = r.randint(0, 1439), r.randint(0, 1439)
    if r.random() < 0.15:
        b = a
    return (f"{a // 60:02d}:{a % 60:02d} and {b // 60:02d}:{b % 60:02d}",
            "earlier" if a < b else "later" if a > b else "same")


def _square_colour(r, w):
    f, k = r.randrange(8), r.randrange(8)
    return "abcdefgh"[f] + str(k + 1), "dark" if (f + k) % 2 == 0 else "light"


@dataclass(frozen=True)
class Kind:
    """One task: what its input is (for the descriptions), its rule in a sentence, its labels in the order the
    descriptions name them, and the function that draws an input and computes its label."""

    what: str
    rule_text: str
    labels: tuple[str, ...]
    rule: Rule


#: Every task of the collection, by kind.
KINDS: dict[str, Kind] = {
    "parity": Kind("a whole number", "A number is even when two divides it, odd otherwise.", ("even", "odd"),
                   _parity),
    "compare_pair": Kind("two numbers separated by a comma", "Compare the first number with the second.",
                         ("greater", "smaller", "equal"), _compare),
    "first_letter": Kind("a word", "Look at the word's first letter: a, e, i, o and u are vowels.",
                         ("vowel", "consonant"), _first_letter),
    "palindrome": Kind("a string of letters", "A palindrome reads the same backwards as forwards.",
                       ("palindrome", "ordinary"), _palindrome),
    "list_order": Kind("a list of numbers", "Check whether the numbers only go up, only go down, or neither.",
                       ("ascending", "descending", "unsorted"), _list_order),
    "digit_count": Kind("a whole number", "Count its digits: one, two, three or four.",
                        ("single", "double", "triple", "quadruple"), _digits),
    "letter_case": Kind("a word", "Check whether its letters are all capitals, all small, or a mix.",
                        ("upper", "lower", "mixed"), _letter_case),
    "day_part": Kind("a clock time in 24-hour format", "Morning runs from 05:00 to 11:59, afternoon to 16:59, "
                     "evening to 21:59, and night is the rest.", ("morning", "afternoon", "evening", "night"),
                     _day_part),
    "season": Kind("a calendar date", "Use the northern meteorological seasons: winter is December to February, "
                   "spring March to May, summer June to August, autumn September to November.",
                   ("winter", "spring", "summer", "autumn"), _season),
    "temperature": Kind("an air temperature in degrees Celsius",
                        "Below 0 is freezing, 0 to 9 cold, 10 to 19 mild, 20 to 29 warm, and 30 or more hot.",
                        ("freezing", "cold", "mild", "warm", "hot"), _temperature),
    "triangle": Kind("the three side lengths of a triangle",
                     "Three equal sides make it equilateral, exactly two isosceles, none scalene.",
                     ("equilateral", "isosceles", "scalene"), _triangle),
    "angle": Kind("an angle in degrees", "Under 90 is acute, 90 right, up to 179 obtuse, 180 straight, more reflex.",
                  ("acute", "right", "obtuse", "straight", "reflex"), _angle),
    "exam": Kind("an exam score out of 100", "A score of 50 or more passes.", ("pass", "fail"), _exam),
    "brackets": Kind("a string of round brackets", "It is balanced when every opening bracket is closed later and "
                     "no closing bracket comes first.", ("balanced", "unbalanced"), _brackets),
    "quadrant": Kind("a point (x, y) of the plane", "The first quadrant has x and y positive, the second x "
                     "negative, the third both negative, the fourth y negative.",
                     ("first", "second", "third", "fourth"), _quadrant),
    "alphabetical": Kind("two words separated by a slash",
                         "Decide whether the first word comes before or after the second in dictionary order.",
                         ("before", "after"), _alphabetical),
    "leap_year": Kind("a year", "Leap years divide by 4, except century years that do not divide by 400.",
                      ("leap", "common"), _leap),
    "compass": Kind("a starting heading and a series of turns",
                    "Left and right are quarter turns, around a half turn; name the final heading.",
                    ("north", "east", "south", "west"), _compass),
    "rock_paper_scissors": Kind("three rounds of rock-paper-scissors", "Rock beats scissors, scissors beat paper, "
                                "paper beats rock; name the side that won more rounds.",
                                ("first", "second", "draw"), _rps),
    "sequence_kind": Kind("a sequence of numbers", "Equal steps make it arithmetic, a constant ratio geometric, "
                          "anything else neither.", ("arithmetic", "geometric", "neither"), _sequence),
    "repeated_letters": Kind("a word", "Check whether any letter occurs in it more than once.",
                             ("repeated", "unique"), _repeats),
    "dominant_colour": Kind("an RGB colour", "Name the channel with the largest value.", ("red", "green", "blue"),
                            _dominant),
    "file_kind": Kind("a file name", "Judge the kind of file by its extension.",
                      ("image", "audio", "video", "document", "code"), _file_kind),
    "magnitude": Kind("a whole number", "Under 100 is small, under 10,000 medium, the rest large.",
                      ("small", "medium", "large"), _magnitude),
    "char_kind": Kind("a single character in quotes", "Say whether it is a letter, a digit or a punctuation mark.",
                      ("letter", "digit", "punctuation"), _char_kind),
    "http_status": Kind("an HTTP status code", "Codes 1xx are informational, 2xx success, 3xx redirect, 4xx client "
                        "errors, 5xx server errors.", ("informational", "success", "redirect", "client", "server"),
                        _status),
    "word_length": Kind("a word", "Up to 4 letters is short, 5 to 7 medium, 8 or more long.",
                        ("short", "medium", "long"), _word_length),
    "time_order": Kind("two clock times", "Say whether the first time of day is earlier than, later than or the "
                       "same as the second.", ("earlier", "later", "same"), _time_order),
    "chessboard": Kind("a chessboard square such as e4", "a1 is a dark square and the colours alternate.",
                       ("dark", "light"), _square_colour),
}


def _maker(kind: Kind, words: tuple[str, ...]) -> Maker:
    def draw(rng: random.Random):
        x, y = kind.rule(rng, words)
        return x, lambda: Example(prompt=x, response=y)
    return draw


def build_labels(descriptions: dict[str, dict[str, list[str]]], *, seed: int = 0,
                 max_examples: int | None = None, min_descriptions: int = 8,
                 quiet: bool = True) -> tuple[list[TaskRecord], dict[str, str]]:
    """Task records of :data:`KINDS`, ``max_examples`` distinct inputs each (default
    :data:`~text2lora.data.sources.generated.EXAMPLES_PER_TASK`; a task with fewer possible inputs, such as
    the 64 chessboard squares, has them all); returns (kept, {dropped: reason}). Deterministic for a ``seed``."""
    words = vocabulary()
    return build_generated(
        "labels", {name: _maker(kind, words) for name, kind in KINDS.items()}, descriptions,
        heldout=HELDOUT_TASKS, metric="exact_match", citation="text2lora (generated word-label tasks)",
        info={name: {"labels": list(kind.labels), "generator": f"text2lora.data.sources.labels.{kind.rule.__name__}"}
              for name, kind in KINDS.items()},
        seed=seed, max_examples=max_examples, min_descriptions=min_descriptions)
