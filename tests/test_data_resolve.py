"""One task resolver (text2lora.data.resolve_tasks) for training recipes and evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest

from text2lora.data import resolve_tasks
from text2lora.errors import DataError

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "data" / "tiny_tasks.jsonl")
ALL = ["user/add_one", "user/double", "user/reverse_word", "user/is_even"]


def test_files_tasks_patterns_and_exclusions():
    assert [t.name for t in resolve_tasks([TINY])] == ALL
    assert [t.name for t in resolve_tasks([f"{TINY}#double", f"{TINY}#user/is_even"])] == ["user/double",
                                                                                             "user/is_even"]
    assert [t.name for t in resolve_tasks([TINY, TINY], exclude=["user/*_one"])] == ALL[1:]  # de-duplicated
    known = resolve_tasks([TINY])
    assert [t.name for t in resolve_tasks(["user/*_*"], known=known)] == ["user/add_one", "user/reverse_word",
                                                                          "user/is_even"]


def test_errors_name_the_entry(tmp_path):
    with pytest.raises(DataError, match="task file .*missing.jsonl does not exist"):
        resolve_tasks([str(tmp_path / "missing.jsonl")])
    with pytest.raises(DataError, match="task 'triple' is not in"):
        resolve_tasks([f"{TINY}#triple"])
    with pytest.raises(DataError, match="unknown benchmark 'nope'; valid: arc_challenge"):
        resolve_tasks(["nope"])
    with pytest.raises(DataError, match="matches no task of the benchmarks"):
        resolve_tasks(["nope_*"])
