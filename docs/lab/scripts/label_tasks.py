"""Procedural word-label tasks for a training experiment: a user task file (JSONL) of bare inputs answered with a label.

    python docs/lab/scripts/label_tasks.py runs/label_tasks.jsonl [--examples 200] [--seed 0]

Every task takes a bare input (a number, a word, a time, a list, ...) and answers with one word out of a
small set of labels that only the description names: the skill the bare-input suite's label tasks ask
for and that the default training mix hardly has (its short-answer tasks answer with a digit, a letter
or Y/N). The rules are computed, so the labels are right by construction. None of the suite's label
tasks (sentiment, topic, divisibility, primes, claims, language, entailment, animal class, continent,
sign, tense, sentence type) is here, and the words come from the sentence encoder's vocabulary minus
every word of the suite's word lists. Descriptions are ten training and three held-out ones per task,
made from the task's rule and labels. The same seed gives the same file.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Callable

from text2lora._io import atomic_write_text
from text2lora.data.forms import _join_labels
from text2lora.encoders import _embedded_encoder_path
from text2lora.eval.instruct import _words

Gen = Callable[[random.Random], tuple[str, str]]


def _suite_words() -> set[str]:
    words: set[str] = set()

    def walk(x: object) -> None:
        if isinstance(x, str):
            words.update(w.lower() for w in re.findall(r"[A-Za-z]+", x))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(_words())
    return words


def _vocabulary() -> list[str]:
    vocab = (_embedded_encoder_path("all-minilm-l6-v2") / "vocab.txt").read_text(encoding="utf-8").split()
    banned = _suite_words()
    return sorted({w for w in vocab if w.isascii() and w.isalpha() and 3 <= len(w) <= 12 and w not in banned})


WORDS = _vocabulary()
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


# ----------------------------------------------------------------------------- the rules


def parity(r):
    n = r.randint(0, 99999)
    return str(n), "even" if n % 2 == 0 else "odd"


def compare(r):
    a = r.randint(0, 999)
    b = a if r.random() < 0.2 else r.randint(0, 999)
    return f"{a}, {b}", "greater" if a > b else "smaller" if a < b else "equal"


def first_letter(r):
    w = r.choice(WORDS)
    return w, "vowel" if w[0] in "aeiou" else "consonant"


def palindrome(r):
    if r.random() < 0.5:
        half = "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 4)))
        w = half + (r.choice("aeiou") if r.random() < 0.5 else "") + half[::-1]
        return w, "palindrome"
    w = r.choice(WORDS)
    return w, "palindrome" if w == w[::-1] else "ordinary"


def list_order(r):
    xs = r.sample(range(1, 100), r.randint(4, 7))
    kind = r.choice(["ascending", "descending", "unsorted"])
    if kind == "ascending":
        xs.sort()
    elif kind == "descending":
        xs.sort(reverse=True)
    elif xs in (sorted(xs), sorted(xs, reverse=True)):
        xs[0], xs[1] = xs[1], xs[0]
    return ", ".join(map(str, xs)), kind


def digits(r):
    k = r.randint(1, 4)
    n = r.randint(10 ** (k - 1) if k > 1 else 0, 10 ** k - 1)
    return str(n), ["single", "double", "triple", "quadruple"][k - 1]


def letter_case(r):
    w = r.choice(WORDS)
    kind = r.choice(["upper", "lower", "mixed"])
    if kind == "upper":
        w = w.upper()
    elif kind == "mixed":
        w = "".join(c.upper() if r.random() < 0.5 else c for c in w)
        if w.isupper() or w.islower():
            w = w[0].upper() + w[1:].lower()
    return w, kind


def day_part(r):
    h, m = r.randint(0, 23), r.choice([0, 15, 30, 45])
    label = "night" if h < 5 else "morning" if h < 12 else "afternoon" if h < 17 else "evening" if h < 22 else "night"
    return f"{h:02d}:{m:02d}", label


def season(r):
    mi = r.randrange(12)
    day = r.randint(1, _DAYS[mi])
    label = ["winter", "spring", "summer", "autumn"][((mi + 1) % 12) // 3]
    return f"{_MONTHS[mi]} {day}", label


def temperature(r):
    t = r.randint(-25, 45)
    label = "freezing" if t < 0 else "cold" if t < 10 else "mild" if t < 20 else "warm" if t < 30 else "hot"
    return f"{t} °C", label


def triangle(r):
    kind = r.choice(["equilateral", "isosceles", "scalene"])
    a = r.randint(3, 20)
    if kind == "equilateral":
        s = [a, a, a]
    elif kind == "isosceles":
        b = r.choice([x for x in range(2, 2 * a) if x != a])
        s = [a, a, b]
    else:
        b, c = r.sample([x for x in range(a + 1, 2 * a)], 2) if a > 3 else (4, 5)
        s = [a, b, c]
    r.shuffle(s)
    return ", ".join(map(str, s)), kind


def angle(r):
    kind = r.choice(["acute", "right", "obtuse", "straight", "reflex"])
    deg = {"acute": r.randint(1, 89), "right": 90, "obtuse": r.randint(91, 179), "straight": 180,
           "reflex": r.randint(181, 359)}[kind]
    return f"{deg} degrees", kind


def exam(r):
    s = r.randint(0, 100)
    return f"{s}/100", "pass" if s >= 50 else "fail"


def brackets(r):
    n = r.randint(2, 5)
    s: list[str] = []
    depth = 0
    for _ in range(2 * n):
        if depth and (r.random() < 0.5 or len(s) + depth >= 2 * n):
            s.append(")")
            depth -= 1
        else:
            s.append("(")
            depth += 1
    s += [")"] * depth
    if r.random() < 0.5:
        i = r.randrange(len(s))
        s[i] = "(" if s[i] == ")" else ")"
    text = "".join(s)
    depth, ok = 0, True
    for c in text:
        depth += 1 if c == "(" else -1
        ok = ok and depth >= 0
    return text, "balanced" if ok and depth == 0 else "unbalanced"


def quadrant(r):
    x = r.choice([-1, 1]) * r.randint(1, 50)
    y = r.choice([-1, 1]) * r.randint(1, 50)
    label = {(1, 1): "first", (-1, 1): "second", (-1, -1): "third", (1, -1): "fourth"}[(x > 0 or -1, y > 0 or -1)]
    return f"({x}, {y})", label


def alphabetical(r):
    a, b = r.sample(WORDS, 2)
    return f"{a} / {b}", "before" if a < b else "after"


def leap(r):
    y = r.randint(1600, 2400)
    if r.random() < 0.3:
        y -= y % 4
    return str(y), "leap" if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else "common"


def compass(r):
    heads = ["north", "east", "south", "west"]
    start = r.randrange(4)
    turns = [r.choice(["left", "right", "around"]) for _ in range(r.randint(1, 3))]
    h = start
    for t in turns:
        h = (h + {"left": -1, "right": 1, "around": 2}[t]) % 4
    return f"facing {heads[start]}; turn " + ", then ".join(turns), heads[h]


def rps(r):
    a, b = r.choice(["rock", "paper", "scissors"]), r.choice(["rock", "paper", "scissors"])
    beats = {"rock": "scissors", "paper": "rock", "scissors": "paper"}
    return f"{a} vs {b}", "draw" if a == b else "first" if beats[a] == b else "second"


def sequence(r):
    kind = r.choice(["arithmetic", "geometric", "neither"])
    a, n = r.randint(1, 9), r.randint(4, 6)
    if kind == "arithmetic":
        d = r.randint(1, 12)
        xs = [a + i * d for i in range(n)]
    elif kind == "geometric":
        q = r.randint(2, 4)
        xs = [a * q ** i for i in range(n)]
    else:
        xs = sorted(r.sample(range(1, 200), n))
        diffs = {y - x for x, y in zip(xs, xs[1:])}
        if len(diffs) == 1:
            xs[-1] += 1
    return ", ".join(map(str, xs)), kind


def repeats(r):
    w = r.choice(WORDS)
    return w, "repeated" if len(set(w)) < len(w) else "unique"


def dominant(r):
    ch = r.randrange(3)
    vals = [r.randint(0, 150) for _ in range(3)]
    vals[ch] = r.randint(max(vals) + 20, 255) if max(vals) + 20 <= 255 else 255
    return f"rgb({vals[0]}, {vals[1]}, {vals[2]})", ["red", "green", "blue"][ch]


def file_kind(r):
    kinds = {"image": ["png", "jpg", "gif", "bmp"], "audio": ["mp3", "wav", "flac", "ogg"],
             "video": ["mp4", "mkv", "avi", "mov"], "document": ["pdf", "docx", "txt", "odt"],
             "code": ["py", "js", "c", "java"]}
    kind = r.choice(sorted(kinds))
    return f"{r.choice(WORDS)}_{r.randint(1, 99)}.{r.choice(kinds[kind])}", kind


def magnitude(r):
    k = r.choice(["small", "medium", "large"])
    n = {"small": r.randint(0, 99), "medium": r.randint(100, 9999), "large": r.randint(10000, 9999999)}[k]
    return str(n), k


def char_kind(r):
    k = r.choice(["letter", "digit", "punctuation"])
    c = r.choice({"letter": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "digit": "0123456789",
                  "punctuation": "!?.,;:-'\"()"}[k])
    return f"'{c}'", k


def status(r):
    code = r.choice([r.randint(100, 103), r.randint(200, 206), r.randint(300, 308), r.randint(400, 451),
                     r.randint(500, 511)])
    return str(code), ["informational", "success", "redirect", "client", "server"][code // 100 - 1]


def word_length(r):
    w = r.choice(WORDS)
    return w, "short" if len(w) <= 4 else "medium" if len(w) <= 7 else "long"


def time_order(r):
    a, b = r.randint(0, 1439), r.randint(0, 1439)
    if r.random() < 0.15:
        b = a
    fmt = lambda m: f"{m // 60:02d}:{m % 60:02d}"  # noqa: E731
    return f"{fmt(a)} and {fmt(b)}", "earlier" if a < b else "later" if a > b else "same"


def square_colour(r):
    f, k = r.randrange(8), r.randrange(8)
    return "abcdefgh"[f] + str(k + 1), "dark" if (f + k) % 2 == 0 else "light"


# name, what the input is, the rule, the labels (in the order the descriptions name them), the generator
TASKS: list[tuple[str, str, str, list[str], Gen]] = [
    ("parity", "a whole number", "A number is even when two divides it, odd otherwise.", ["even", "odd"], parity),
    ("compare_pair", "two numbers separated by a comma",
     "Compare the first number with the second.", ["greater", "smaller", "equal"], compare),
    ("first_letter", "a word", "Look at the word's first letter: a, e, i, o and u are vowels.",
     ["vowel", "consonant"], first_letter),
    ("palindrome", "a string of letters", "A palindrome reads the same backwards as forwards.",
     ["palindrome", "ordinary"], palindrome),
    ("list_order", "a list of numbers", "Check whether the numbers only go up, only go down, or neither.",
     ["ascending", "descending", "unsorted"], list_order),
    ("digit_count", "a whole number", "Count its digits: one, two, three or four.",
     ["single", "double", "triple", "quadruple"], digits),
    ("letter_case", "a word", "Check whether its letters are all capitals, all small, or a mix.",
     ["upper", "lower", "mixed"], letter_case),
    ("day_part", "a clock time in 24-hour format",
     "Morning runs from 05:00 to 11:59, afternoon to 16:59, evening to 21:59, and night is the rest.",
     ["morning", "afternoon", "evening", "night"], day_part),
    ("season", "a calendar date", "Use the northern meteorological seasons: winter is December to February, "
     "spring March to May, summer June to August, autumn September to November.",
     ["winter", "spring", "summer", "autumn"], season),
    ("temperature", "an air temperature in degrees Celsius",
     "Below 0 is freezing, 0 to 9 cold, 10 to 19 mild, 20 to 29 warm, and 30 or more hot.",
     ["freezing", "cold", "mild", "warm", "hot"], temperature),
    ("triangle", "the three side lengths of a triangle",
     "Three equal sides make it equilateral, exactly two isosceles, none scalene.",
     ["equilateral", "isosceles", "scalene"], triangle),
    ("angle", "an angle in degrees", "Under 90 is acute, 90 right, up to 179 obtuse, 180 straight, more reflex.",
     ["acute", "right", "obtuse", "straight", "reflex"], angle),
    ("exam", "an exam score out of 100", "A score of 50 or more passes.", ["pass", "fail"], exam),
    ("brackets", "a string of round brackets",
     "It is balanced when every opening bracket is closed later and no closing bracket comes first.",
     ["balanced", "unbalanced"], brackets),
    ("quadrant", "a point (x, y) of the plane",
     "The first quadrant has x and y positive, the second x negative, the third both negative, the fourth y negative.",
     ["first", "second", "third", "fourth"], quadrant),
    ("alphabetical", "two words separated by a slash",
     "Decide whether the first word comes before or after the second in dictionary order.",
     ["before", "after"], alphabetical),
    ("leap_year", "a year", "Leap years divide by 4, except century years that do not divide by 400.",
     ["leap", "common"], leap),
    ("compass", "a starting heading and a series of turns",
     "Left and right are quarter turns, around a half turn; name the final heading.",
     ["north", "east", "south", "west"], compass),
    ("rock_paper_scissors", "one round of rock-paper-scissors",
     "Rock beats scissors, scissors beat paper, paper beats rock; name the winning side.",
     ["first", "second", "draw"], rps),
    ("sequence_kind", "a sequence of numbers",
     "Equal steps make it arithmetic, a constant ratio geometric, anything else neither.",
     ["arithmetic", "geometric", "neither"], sequence),
    ("repeated_letters", "a word", "Check whether any letter occurs in it more than once.",
     ["repeated", "unique"], repeats),
    ("dominant_colour", "an RGB colour", "Name the channel with the largest value.", ["red", "green", "blue"],
     dominant),
    ("file_kind", "a file name", "Judge the kind of file by its extension.",
     ["image", "audio", "video", "document", "code"], file_kind),
    ("magnitude", "a whole number", "Under 100 is small, under 10,000 medium, the rest large.",
     ["small", "medium", "large"], magnitude),
    ("char_kind", "a single character in quotes", "Say whether it is a letter, a digit or a punctuation mark.",
     ["letter", "digit", "punctuation"], char_kind),
    ("http_status", "an HTTP status code",
     "Codes 1xx are informational, 2xx success, 3xx redirect, 4xx client errors, 5xx server errors.",
     ["informational", "success", "redirect", "client", "server"], status),
    ("word_length", "a word", "Up to 4 letters is short, 5 to 7 medium, 8 or more long.",
     ["short", "medium", "long"], word_length),
    ("time_order", "two clock times", "Say whether the first time of day is earlier than, later than or the same as the second.",
     ["earlier", "later", "same"], time_order),
    ("chessboard", "a chessboard square such as e4", "a1 is a dark square and the colours alternate.",
     ["dark", "light"], square_colour),
]

_TRAIN = [
    "{rule} Answer with one word: {or_}.",
    "Read {what} and label it {or_}. Reply with the label alone.",
    "Classify {what}. {rule} The answer is exactly one of: {list_}.",
    "Given {what}, output {or_} and nothing else. {rule}",
    "Label each input, {what}, with one of these words: {list_}. {rule}",
    "{rule} Respond with just the label ({or_}).",
    "Decide the right category for {what}. Categories: {list_}. Write only the category.",
    "The input is {what}; the output is one of {list_}. {rule}",
    "Sort {what} into {n} classes, {or_}, and answer with the class name.",
    "Tell which label fits {what}: {or_}. {rule} No explanation.",
]
_HELDOUT = [
    "Assign {what} the label {or_}. {rule}",
    "{rule} Given {what}, say only {or_}.",
    "Categorise {what} as {or_}; give the single matching word.",
]


def build(examples: int, seed: int) -> list[dict]:
    tasks = []
    for name, what, rule, labels, gen in TASKS:
        r = random.Random(f"{seed}:{name}")
        rows = []
        for _ in range(examples):  # small input spaces (a chessboard square, a round of the game) repeat inputs
            x, y = gen(r)
            assert y in labels, (name, x, y)
            rows.append({"input": x, "output": y})
        fill = {"what": what, "rule": rule, "or_": _join_labels(labels), "list_": ", ".join(labels), "n": len(labels)}
        tasks.append({"name": f"labels_{name}", "license": "Apache-2.0", "metric": "exact_match",
                      "citation": "generated by docs/lab/scripts/label_tasks.py",
                      "descriptions": [t.format(**fill) for t in _TRAIN],
                      "heldout_descriptions": [t.format(**fill) for t in _HELDOUT], "examples": rows})
    return tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tasks = build(args.examples, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks))
    sizes = [len(t["examples"]) for t in tasks]
    print(f"{len(tasks)} tasks, {min(sizes)}-{max(sizes)} examples each -> {args.out}")


if __name__ == "__main__":
    main()
