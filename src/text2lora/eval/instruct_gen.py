"""Seeded generators of the bare-input suite's inputs (:mod:`text2lora.eval.instruct`).

Each generator takes a :class:`random.Random` and the word lists of ``resources/instruct/words.yaml``
and returns one ``(input, gold answers)`` pair; gold is ``None`` where any answer of the right form
will do. Label generators draw the label first, so the labels come out balanced. An input is the bare
material of the task (a review, two numbers, a word): never an instruction, never the answer form.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable

__all__ = ["GENERATORS"]

Words = dict[str, Any]
Item = tuple[str, "list[str] | None"]


def _fill(template: str, rng: random.Random, words: Words, **fixed: str) -> str:
    """``template`` with ``{name}``, ``{city}`` and each ``{n}`` (a fresh small number) filled in."""
    def one(m: re.Match) -> str:
        key = m.group(1)
        if key in fixed:
            return fixed[key]
        if key == "name":
            return rng.choice(words["names"])
        if key == "city":
            return rng.choice(words["cities"])
        if key == "n":
            return str(rng.randint(2, 40))
        raise KeyError(key)
    return re.sub(r"\{(\w+)\}", one, template)


# ----------------------------------------------------------------------------- label tasks

def sentiment(rng: random.Random, words: Words) -> Item:
    r = words["reviews"]
    label = rng.choice(["positive", "negative", "neutral"])
    opening = rng.choice(r["openings"]).format(item=rng.choice(r["items"]))
    return f"{opening} {rng.choice(r[label])}", [label]


def topic(rng: random.Random, words: Words) -> Item:
    label = rng.choice(sorted(words["topics"]))
    return _fill(rng.choice(words["topics"][label]), rng, words), [label]


def divisible(rng: random.Random, words: Words) -> Item:
    b = rng.randint(3, 12)
    k = rng.randint(3, 30)
    yes = rng.random() < 0.5
    a = b * k if yes else b * k + rng.randint(1, b - 1)
    return f"{a} and {b}", ["yes" if yes else "no"]


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def prime(rng: random.Random, words: Words) -> Item:
    want = rng.random() < 0.5
    while True:
        n = rng.randrange(11, 400, 2)  # odd numbers only: evenness gives no answer away
        if _is_prime(n) == want:
            return str(n), ["yes" if want else "no"]


def arithmetic_claims(rng: random.Random, words: Words) -> Item:
    op = rng.choice(["+", "-", "x"])
    a, b = (rng.randint(10, 99), rng.randint(10, 99)) if op != "x" else (rng.randint(3, 19), rng.randint(3, 12))
    value = a + b if op == "+" else a - b if op == "-" else a * b
    true = rng.random() < 0.5
    shown = value if true else value + rng.choice([-10, -2, -1, 1, 2, 10])
    return f"{a} {op} {b} = {shown}", ["true" if true else "false"]


def number_facts(rng: random.Random, words: Words) -> Item:
    true = rng.random() < 0.5
    kind = rng.choice(["parity", "order", "multiple", "square"])
    if kind == "parity":
        n = rng.randint(10, 999)
        said = "even" if (n % 2 == 0) == true else "odd"
        return f"{n} is an {said} number.", ["true" if true else "false"]
    if kind == "order":
        a, b = rng.sample(range(10, 1000), 2)
        said = "greater" if (a > b) == true else "less"
        return f"{a} is {said} than {b}.", ["true" if true else "false"]
    if kind == "multiple":
        m = rng.randint(3, 9)
        n = m * rng.randint(3, 40) + (0 if true else rng.randint(1, m - 1))
        return f"{n} is a multiple of {m}.", ["true" if true else "false"]
    n = rng.randint(4, 30)
    shown = n * n if true else n * n + rng.choice([-n, -1, 1, n])
    return f"The square of {n} is {shown}.", ["true" if true else "false"]


def language(rng: random.Random, words: Words) -> Item:
    label = rng.choice(sorted(words["languages"]))
    subjects, verbs, endings = words["languages"][label]
    return f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(endings)}.", [label]


def _two_people(rng: random.Random, words: Words) -> tuple[str, str]:
    a, b = rng.sample(words["names"], 2)
    return a, b


def entailment(rng: random.Random, words: Words) -> Item:
    label = rng.choice(["entailment", "contradiction", "neutral"])
    scheme = rng.randrange(4)
    name, other = _two_people(rng, words)
    if scheme == 0:
        country, (capitals, _) = rng.choice(sorted(words["countries"].items()))
        elsewhere = rng.choice([c for c in sorted(words["countries"]) if c != country])
        premise = f"{name} lives in {capitals[0]}."
        hyp = {"entailment": f"{name} lives in {country}.", "contradiction": f"{name} lives in {elsewhere}.",
               "neutral": f"{name} works as a nurse."}[label]
    elif scheme == 1:
        n = rng.randint(5, 30)
        premise = f"{name} bought {n} apples at the market."
        hyp = {"entailment": f"{name} bought more than {rng.randint(1, n - 1)} apples.",
               "contradiction": f"{name} bought fewer than {rng.randint(1, n)} apples.",
               "neutral": f"{name} paid for the apples in cash."}[label]
    elif scheme == 2:
        k = rng.randint(2, 60)
        premise = "Every room in the hotel has a balcony."
        hyp = {"entailment": f"Room {k} of the hotel has a balcony.",
               "contradiction": f"Room {k} of the hotel has no balcony.",
               "neutral": f"Room {k} of the hotel has a view of the sea."}[label]
    else:
        premise = f"{name} is taller than {other}."
        hyp = {"entailment": f"{other} is shorter than {name}.", "contradiction": f"{other} is taller than {name}.",
               "neutral": f"{name} is older than {other}."}[label]
    return f"{premise}\n{hyp}", [label]


def animal_class(rng: random.Random, words: Words) -> Item:
    label = rng.choice(sorted(words["animals"]))
    animal = rng.choice(words["animals"][label])
    article = "an" if animal[0] in "aeiou" else "a"
    return f"We saw {article} {animal} {rng.choice(words['animal_places'])}.", [label]


def continent(rng: random.Random, words: Words) -> Item:
    country, (_, cont) = rng.choice(sorted(words["countries"].items()))
    return country[0].upper() + country[1:], [cont]


def sign(rng: random.Random, words: Words) -> Item:
    label = rng.choice(["positive", "negative", "zero"])
    op = rng.choice(["x", "-", "+"])
    while True:
        a, b = rng.randint(-20, 20), rng.randint(-20, 20)
        value = a * b if op == "x" else a - b if op == "-" else a + b
        if (value > 0, value < 0, value == 0)[["positive", "negative", "zero"].index(label)]:
            return f"{a} {op} {b}" if b >= 0 else f"{a} {op} ({b})", [label]


def tense(rng: random.Random, words: Words) -> Item:
    label = rng.choice(["past", "present", "future"])
    base, past, third, obj = rng.choice(words["verbs"])
    verb = {"past": past, "present": third, "future": f"will {base}"}[label]
    return f"{rng.choice(words['names'])} {verb} {obj}.", [label]


def sentence_type(rng: random.Random, words: Words) -> Item:
    label = rng.choice(["question", "command", "statement"])
    base, past, _, obj = rng.choice(words["verbs"])
    name = rng.choice(words["names"])
    if label == "question":
        text = rng.choice([f"Did {name} {base} {obj}?", f"Will you {base} {obj}?", f"Why did {name} {base} {obj}?"])
    elif label == "command":
        text = rng.choice([f"{base.capitalize()} {obj} before noon.", f"Please {base} {obj}.",
                           f"{base.capitalize()} {obj} right now!"])
    else:
        text = rng.choice([f"{name} {past} {obj}.", f"{name} {past} {obj} yesterday.", f"I {past} {obj}."])
    return text, [label]


# ----------------------------------------------------------------------------- form tasks (no gold)

def feeling(rng: random.Random, words: Words) -> Item:
    return f"{rng.choice(words['names'])} {rng.choice(words['feelings'])}.", None


def story(rng: random.Random, words: Words) -> Item:
    s = words["stories"]
    return f"{rng.choice(words['names'])} {rng.choice(s['setups'])}. {rng.choice(s['outcomes'])}", None


def product(rng: random.Random, words: Words) -> Item:
    p = words["products"]
    adjective = rng.choice(p["adjectives"])
    return f"{'An' if adjective[0] in 'aeiou' else 'A'} {adjective} {rng.choice(p['things'])}", None


def city_sentence(rng: random.Random, words: Words) -> Item:
    city = rng.choice(words["cities"])
    return _fill(rng.choice(words["city_sentences"]), rng, words, city=city), [city]


def age_sentence(rng: random.Random, words: Words) -> Item:
    n = str(rng.randint(6, 90))
    return _fill(rng.choice(words["age_sentences"]), rng, words, n=n), [n]


def trip(rng: random.Random, words: Words) -> Item:
    t = words["trips"]
    return f"{rng.choice(t['activities'])} {rng.choice(t['places'])}.", None


def category(rng: random.Random, words: Words) -> Item:
    c = rng.choice(words["categories"])
    return c[0].upper() + c[1:], None


def pros(rng: random.Random, words: Words) -> Item:
    p = rng.choice(words["pros_items"])
    return p[0].upper() + p[1:], None


def python_problem(rng: random.Random, words: Words) -> Item:
    p = words["python_problems"]
    n_lists = len(p["aggregates"]) * len(p["filters"])
    i = rng.randrange(n_lists + len(p["strings"]))
    if i >= n_lists:
        return p["strings"][i - n_lists], None
    agg, filt = p["aggregates"][i // len(p["filters"])], p["filters"][i % len(p["filters"])]
    return f"{agg[0].upper() + agg[1:]} {filt} in a list of integers.", None


def define(rng: random.Random, words: Words) -> Item:
    return rng.choice(words["define"]), None


def category_items(rng: random.Random, words: Words) -> Item:
    cat = rng.choice(sorted(words["category_items"]))
    return ", ".join(rng.sample(words["category_items"][cat], 3)), [cat]


# ----------------------------------------------------------------------------- short answers (gold)

def add_pair(rng: random.Random, words: Words) -> Item:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return f"{a} and {b}", [str(a + b)]


def multiply_pair(rng: random.Random, words: Words) -> Item:
    a, b = rng.randint(11, 99), rng.randint(2, 19)
    return f"{a} and {b}", [str(a * b)]


def difference_pair(rng: random.Random, words: Words) -> Item:
    a, b = rng.sample(range(100, 1000), 2)
    return f"{a} and {b}", [str(abs(a - b))]


def _decimal(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def km_to_m(rng: random.Random, words: Words) -> Item:
    tenths = rng.randint(1, 200)
    return f"{_decimal(tenths / 10)} km", [str(tenths * 100)]


def hours_to_minutes(rng: random.Random, words: Words) -> Item:
    quarters = rng.randint(1, 96)
    h = _decimal(quarters / 4)
    return f"{h} {'hour' if h == '1' else 'hours'}", [str(quarters * 15)]


def kg_to_g(rng: random.Random, words: Words) -> Item:
    hundredths = rng.randint(5, 1000)
    return f"{_decimal(hundredths / 100)} kg", [str(hundredths * 10)]


def reverse_word(rng: random.Random, words: Words) -> Item:
    w = rng.choice(words["words"])
    return w, [w[::-1]]


def count_letters(rng: random.Random, words: Words) -> Item:
    w = rng.choice(words["words"])
    return w, [str(len(w))]


def drop_vowels(rng: random.Random, words: Words) -> Item:
    w = rng.choice(words["words"])
    return w, [re.sub(r"[aeiou]", "", w)]


def next_term(rng: random.Random, words: Words) -> Item:
    start, step = rng.randint(1, 60), rng.choice([-9, -7, -5, -3, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12])
    terms = [start + k * step for k in range(5)]
    return ", ".join(map(str, terms[:4])), [str(terms[4])]


def capital(rng: random.Random, words: Words) -> Item:
    country, (capitals, _) = rng.choice(sorted(words["countries"].items()))
    return country[0].upper() + country[1:], list(capitals)


def antonym(rng: random.Random, words: Words) -> Item:
    w, opposites = rng.choice(sorted(words["antonyms"].items()))
    return w, list(opposites)


_ROMAN = [(100, "C"), (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]


def _to_roman(n: int) -> str:
    out = ""
    for value, letters in _ROMAN:
        while n >= value:
            out, n = out + letters, n - value
    return out


def roman(rng: random.Random, words: Words) -> Item:
    n = rng.randint(4, 399)
    return _to_roman(n), [str(n)]


def digit_sum(rng: random.Random, words: Words) -> Item:
    n = rng.randint(1000, 99999)
    return str(n), [str(sum(map(int, str(n))))]


GENERATORS: dict[str, Callable[[random.Random, Words], Item]] = {f.__name__: f for f in [
    sentiment, topic, divisible, prime, arithmetic_claims, number_facts, language, entailment, animal_class,
    continent, sign, tense, sentence_type, feeling, story, product, city_sentence, age_sentence, trip, category,
    pros, python_problem, define, category_items, add_pair, multiply_pair, difference_pair, km_to_m,
    hours_to_minutes, kg_to_g, reverse_word, count_letters, drop_vowels, next_term, capital, antonym, roman,
    digit_sum,
]}
