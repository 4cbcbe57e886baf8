"""A heavy command started beside another one warns, names it, and cleans up after itself."""

import json
import subprocess
import sys

import pytest
import torch

from text2lora.cli import _busy, main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path))
    return tmp_path / "jobs"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is for CPU-only machines")
def test_second_heavy_job_warns_and_stale_entries_go(cache, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        cache.mkdir(parents=True)
        (cache / f"{sleeper.pid}.json").write_text(json.dumps({"pid": sleeper.pid, "command": "t2l eval -b all"}))
        (cache / f"{dead.pid}.json").write_text(json.dumps({"pid": dead.pid, "command": "t2l train sft x.yaml"}))
        (cache / "garbage.json").write_text("{not json")
        assert main(["eval", "-b", "nope", "-c", "base"]) == 2  # heavy command, bad input
        err = capsys.readouterr().err
        assert f"another t2l job is using this machine's CPU (pid {sleeper.pid}: t2l eval -b all)" in err
        assert "unknown benchmark 'nope'" in err and "train sft" not in err
        # the dead job's entry and the unreadable one are gone; this process removed its own entry
        assert sorted(p.name for p in cache.iterdir()) == [f"{sleeper.pid}.json"]
        # light commands neither warn nor register
        assert main(["eval", "--table", str(cache), "-c", "base"]) == 2
        assert "warning" not in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _busy.other_jobs() == [] and list(cache.iterdir()) == []


def test_registered_entry_names_the_command(cache):
    with _busy.registered(["train", "sft", "a.yaml"]):
        (entry,) = cache.iterdir()
        info = json.loads(entry.read_text())
        assert info["command"] == "t2l train sft a.yaml" and info["pid"] > 0
        assert _busy.other_jobs() == []  # itself is not "another" job
    assert list(cache.iterdir()) == []
