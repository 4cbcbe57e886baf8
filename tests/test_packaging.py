"""Packaging: constraints.txt (the pins scripts/setup.sh installs) agrees with pyproject.toml's requirements, and
the wheel `python -m build` makes installs and runs on its own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt line {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_every_requirement_is_pinned_within_its_range():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is required by pyproject.toml but not pinned: run scripts/pin.py"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}"


def test_setup_installs_torch_at_its_one_pin_and_leaves_the_base_package_to_first_use():
    """torch's version is written once, in constraints.txt: what setup.sh installs is read from there. The embedded
    base's package (which pip cannot declare) is named once, in text2lora/embedded.py, and installed on first use."""
    from text2lora.embedded import DEFAULT_BASE, EMBEDDED_BASES

    pins, setup = _pins(), (ROOT / "scripts" / "setup.sh").read_text()
    line = next(ln for ln in setup.splitlines() if ln.startswith("TORCH="))
    torch = subprocess.run(["bash", "-c", f"{line}; echo \"$TORCH\""], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert torch == f"torch=={pins['torch']}" and '"$TORCH"' in setup and "-c constraints.txt" in setup
    base_package = EMBEDDED_BASES[DEFAULT_BASE].package.name
    assert f"{base_package}==" not in setup and canonicalize_name(base_package) not in pins


@pytest.mark.slow
def test_the_wheel_installs_in_a_fresh_venv_and_generates_what_the_source_tree_generates(tmp_path):
    """`python -m build` makes a wheel and an sdist; the wheel, installed with its dependencies into a new virtual
    environment (no system site-packages; torch at its pin), runs `t2l generate` from a folder outside the
    repository, and the adapter equals the one the source tree generates for the same description."""
    import venv

    from text2lora import LoRAAdapter, TextToLoRA

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)], check=True,
                   capture_output=True, text=True)
    wheel = next(dist.glob("text_to_lora-*.whl"))
    assert next(dist.glob("text_to_lora-*.tar.gz")).stat().st_size > 0
    venv.create(tmp_path / "venv", with_pip=True)
    py = tmp_path / "venv" / "bin" / "python"
    torch = f"torch=={_pins()['torch']}"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c",
                    str(ROOT / "constraints.txt"), torch, str(wheel)], check=True, capture_output=True, text=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TEXT2LORA_CACHE"] = str(tmp_path / "cache")
    where = subprocess.run([str(py), "-c", "import text2lora; print(text2lora.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv")  # the wheel's files, not the source tree's
    description = "Classify the sentiment of a movie review as positive or negative."
    proc = subprocess.run([str(tmp_path / "venv" / "bin" / "t2l"), "generate", description, "--out", "lora"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    made, here = LoRAAdapter.load(work / "lora"), TextToLoRA.from_pretrained().generate(description)
    assert made.description == description and set(made.A) == set(here.A)
    for m in here.A:
        assert torch_equal(made.A[m], here.A[m]) and torch_equal(made.B[m], here.B[m]), m


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
