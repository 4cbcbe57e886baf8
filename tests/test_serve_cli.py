"""``t2l serve`` / ``t2l ui`` command lines: help, flag validation, and a real ``t2l serve`` process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from _serve_utils import base_gguf, engine_kind, free_port, tiny_generator  # noqa: F401

pytest.importorskip("fastapi")


@pytest.mark.parametrize("cmd", ["serve", "ui"])
def test_help(cmd, capsys):
    from text2lora.cli import main

    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--host" in out and "127.0.0.1" in out and "--batch-wait-ms" in out and "--engine" in out


def test_bad_flag_is_one_line_exit_2(capsys):
    from text2lora.cli import main

    assert main(["serve", "--max-batch", "0"]) == 2
    err = capsys.readouterr().err
    assert "--max-batch" in err and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["serve", "ui"])
def test_the_llama_cpp_engine_without_its_package_is_one_line_exit_2(cmd, monkeypatch, capsys):
    import importlib.util

    from text2lora.cli import main

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else
                        find_spec(name, *a))
    assert main([cmd, "--engine", "llama.cpp"]) == 2
    err = capsys.readouterr().err
    assert "llama-cpp-python" in err and "T2L_LLAMA_CPP=1 bash scripts/setup.sh" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_t2l_serve_process_answers_the_openai_client(tmp_path, engine_kind):
    openai = pytest.importorskip("openai")
    base, _ = tiny_generator(tmp_path)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    engine_args = ["--engine", engine_kind] + (["--base-gguf", str(base_gguf(base))] if engine_kind == "llama.cpp"
                                               else [])
    proc = subprocess.Popen([sys.executable, "-m", "text2lora.cli", "serve", "--model", str(tmp_path / "gen"),
                             "--port", str(port), "--quiet", "--adapter-dir", str(tmp_path / "adapters"),
                             *engine_args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=30)
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "t2l serve did not start within 90 s"
                time.sleep(0.3)
        assert models.data[0].id == str(tmp_path / "base")
        r = client.chat.completions.create(model="t2l:Answer with one word.", max_tokens=5,
                                           messages=[{"role": "user", "content": "Hello"}])
        assert r.choices[0].message.content and r.model.startswith("t2l-")
        assert (tmp_path / "adapters" / r.model / "adapter_model.safetensors").is_file()
        # the llama.cpp engine keeps the adapter's GGUF file beside its PEFT files
        assert (tmp_path / "adapters" / r.model / "adapter.gguf").is_file() == (engine_kind == "llama.cpp")
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/v1/stats").json()["engine"] == engine_kind
    finally:
        proc.terminate()
        proc.wait(timeout=30)
