"""``--force`` replaces only what text2lora wrote: every directory it writes lists its files (and their
SHA-256) in a manifest, and anything else found there (a user's file, a changed file, an empty folder, a link)
makes ``--force`` refuse, naming it, with nothing deleted. A single output file is overwritten only when it is
a GGUF adapter text2lora wrote."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _serve_utils import tiny_generator
from text2lora._io import MANIFEST, atomic_dir, check_replaceable, foreign_entries
from text2lora.cli import main
from text2lora.errors import OutputExistsError


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    root = tmp_path_factory.mktemp("force")
    tiny_generator(root)
    return root / "gen"


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _refused(rc: int, err: str, *names: str) -> None:
    """Exit 2, one line, naming each of ``names``."""
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("t2l: error:") and "Traceback" not in err, err
    for n in names:
        assert n in lines[0], lines[0]


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes (an independent snapshot: nothing may change on a refusal)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _generate(gen, out, desc="Count the words.", *extra):
    return main(["generate", "--model", str(gen), desc, "--out", str(out), "--quiet", *map(str, extra)])


def test_manifest_lists_every_file_with_its_digest(gen, tmp_path):
    out = tmp_path / "ad"
    assert _generate(gen, out) == 0
    listed = json.loads((out / MANIFEST).read_text())["files"]
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir() if p.name != MANIFEST}
    assert listed == on_disk
    assert set(on_disk) == {"adapter_config.json", "adapter_model.safetensors", "text2lora.json"}


def test_issue_reproduction_user_files_in_an_adapter_dir_are_kept(gen, tmp_path):
    """`t2l generate D --out ad`, the user adds ad/notes.txt and ad/data/x.csv, `... --force`: refused, as a real
    process (exit 2, one line naming both), every file as it was."""
    ad = tmp_path / "ad"
    assert _generate(gen, ad, "Count the words.") == 0
    (ad / "notes.txt").write_text("my notes")
    (ad / "data").mkdir()
    (ad / "data" / "x.csv").write_text("a,b\n1,2\n")
    before = _tree(ad)
    proc = subprocess.run([sys.executable, "-m", "text2lora.cli", "generate", "--model", str(gen), "Count letters.",
                           "--out", str(ad), "--force"], capture_output=True, text=True, timeout=300)
    _refused(proc.returncode, proc.stderr, "notes.txt", "data/x.csv")
    assert _tree(ad) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_force_replaces_its_own_output(gen, tmp_path, capsys):
    ad = tmp_path / "ad"
    assert _generate(gen, ad, "Count the words.") == 0
    assert _generate(gen, ad, "Count letters.", "--force") == 0
    assert json.loads((ad / "text2lora.json").read_text())["description"] == "Count letters."
    # several adapters in one directory, then one adapter over it: all of it text2lora's
    many = tmp_path / "many"
    descs = tmp_path / "d.txt"
    descs.write_text("Add two numbers.\nAnswer yes or no.\n")
    assert main(["generate", "--model", str(gen), "--file", str(descs), "--out", str(many), "--quiet"]) == 0
    sub = json.loads((many / "index.json").read_text())[0]["dir"]
    (many / sub / "mine.txt").write_text("mine")
    _refused(*_cli(capsys, "generate", "--model", gen, "x y", "--out", many, "--force"), f"{sub}/mine.txt")
    (many / sub / "mine.txt").unlink()
    assert _generate(gen, many, "Add numbers.", "--force") == 0
    assert json.loads((many / "text2lora.json").read_text())["description"] == "Add numbers."


@pytest.mark.parametrize("plant, named", [
    (lambda d: (d / "text2lora.json").write_text('{"description": "edited by hand"}'), "text2lora.json (changed"),
    (lambda d: (d / "empty_folder").mkdir(), "empty_folder/"),
    (lambda d: os.symlink("/etc/hostname", d / "link"), "link"),
    (lambda d: (d / "README.md").write_text("# my own notes\n"), "README.md"),
])
def test_anything_not_written_by_t2l_is_refused(gen, tmp_path, capsys, plant, named):
    ad = tmp_path / "ad"
    assert _generate(gen, ad) == 0
    plant(ad)
    before = _tree(ad)
    _refused(*_cli(capsys, "generate", "--model", gen, "Count letters.", "--out", ad, "--force"), named)
    planted = ad / named.split()[0].rstrip("/")
    assert _tree(ad) == before and (planted.exists() or planted.is_symlink())


def test_a_users_own_peft_adapter_is_never_replaced(gen, tmp_path, capsys):
    """A PEFT directory text2lora did not write (no manifest, no text2lora.json) holds the user's weights."""
    ad = tmp_path / "ad"
    assert _generate(gen, ad) == 0
    (ad / MANIFEST).unlink()
    (ad / "text2lora.json").unlink()
    before = _tree(ad)
    _refused(*_cli(capsys, "generate", "--model", gen, "x y", "--out", ad, "--force"), "adapter_config.json")
    assert _tree(ad) == before


def test_directories_written_before_manifests_are_still_replaced(gen, tmp_path, capsys):
    """An adapter an earlier version wrote (no manifest): recognised by text2lora.json, replaced while it holds only
    the names text2lora wrote then; with a user's file beside them, refused."""
    ad = tmp_path / "ad"
    assert _generate(gen, ad) == 0
    (ad / MANIFEST).unlink()
    (ad / "notes.txt").write_text("mine")
    _refused(*_cli(capsys, "generate", "--model", gen, "x y", "--out", ad, "--force"), "notes.txt")
    (ad / "notes.txt").unlink()
    assert _generate(gen, ad, "Count letters.", "--force") == 0
    assert json.loads((ad / "text2lora.json").read_text())["description"] == "Count letters."
    assert (ad / MANIFEST).is_file()


def test_init_force_keeps_user_files_in_a_checkpoint_dir(gen, tmp_path, capsys):
    base = gen.parent / "base"
    out = tmp_path / "g"
    init = ["init", "--base", base, "--latent-dim", "16", "--head-in", "32", "--out", out, "--quiet"]
    assert _cli(capsys, *init)[0] == 0
    assert _cli(capsys, *init, "--force")[0] == 0
    (out / "train_log.txt").write_text("mine")
    before = _tree(out)
    _refused(*_cli(capsys, *init, "--force"), "train_log.txt")
    assert _tree(out) == before


def test_library_atomic_dir_refuses_at_commit_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "d"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    (out / "b.txt").write_text("user")
    with pytest.raises(OutputExistsError, match="b.txt"):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "a.txt").write_text("2")
    assert (out / "a.txt").read_text() == "1" and (out / "b.txt").read_text() == "user"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    (out / "b.txt").unlink()
    with atomic_dir(out, force=True) as tmp:
        (tmp / "a.txt").write_text("2")
    assert (out / "a.txt").read_text() == "2"


# ----------------------------------------------------------------------------- single files (GGUF)

@pytest.fixture(scope="module")
def gguf_setup(gen):
    """The tiny generator's base as a GGUF file and an adapter directory to export."""
    from test_formats_gguf import write_base_gguf

    from text2lora import TextToLoRA, load_base

    root = gen.parent
    base = load_base(str(root / "base"), device="cpu")
    base_gguf = write_base_gguf(root / "base.gguf", base, "llama")
    ad = root / "export_ad"
    if not ad.exists():
        TextToLoRA.from_pretrained(gen).generate("Count the words.").save(ad)
    return base_gguf, ad


def test_export_force_refuses_a_users_file(gguf_setup, tmp_path, capsys):
    """`t2l export ad --out notes.txt --force` over the user's notes.txt: refused, the file intact; the same for a
    GGUF text2lora did not write (the base model's own file)."""
    base_gguf, ad = gguf_setup
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    _refused(*_cli(capsys, "export", ad, "--out", notes, "--base-gguf", base_gguf, "--force"), str(notes))
    assert notes.read_text() == "my notes"
    other = tmp_path / "model.gguf"
    other.write_bytes(base_gguf.read_bytes())
    _refused(*_cli(capsys, "export", ad, "--out", other, "--base-gguf", base_gguf, "--force"), "did not write")
    assert other.read_bytes() == base_gguf.read_bytes()
    # generate --format gguf refuses the same files
    _refused(*_cli(capsys, "generate", "--model", gguf_setup[1].parent / "gen", "x y", "--format", "gguf",
                   "--base-gguf", base_gguf, "--out", notes, "--force"), str(notes))
    assert notes.read_text() == "my notes"


def test_export_force_replaces_its_own_gguf(gguf_setup, tmp_path, capsys):
    import gguf

    base_gguf, ad = gguf_setup
    out = tmp_path / "a.gguf"
    assert _cli(capsys, "export", ad, "--out", out, "--base-gguf", base_gguf, "--quiet")[0] == 0
    assert foreign_entries(out) == []
    first = out.read_bytes()
    out.write_bytes(first)  # still the same GGUF: replaceable
    assert _cli(capsys, "export", ad, "--out", out, "--base-gguf", base_gguf, "--quiet", "--force")[0] == 0
    assert gguf.GGUFReader(str(out)).fields["general.type"].contents() == "adapter"


def test_cards_and_gguf_beside_an_adapter_are_text2loras(gguf_setup, tmp_path):
    """What `push_adapter` uploads (the PEFT directory, adapter.gguf and the model card) may be replaced."""
    from text2lora import LoRAAdapter
    from text2lora.publish import prepare_adapter_folder

    base_gguf, ad = gguf_setup
    folder = tmp_path / "repo"
    prepare_adapter_folder(LoRAAdapter.load(ad), folder, "me/my-adapter", gguf=True, base_gguf=base_gguf)
    assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter.gguf", "README.md"}
    check_replaceable(folder)
    (folder / "README.md").write_text("# My adapter\n\nnotes of mine\n")
    with pytest.raises(OutputExistsError, match="README.md"):
        check_replaceable(folder)


@pytest.mark.parametrize("marker, content", [
    ("manifest.json", {"format_version": 1, "collection": "olmo"}),  # a task collection in the cache
    ("state.json", {"step": 3, "rng": {}}),  # a training checkpoint
])
@pytest.mark.parametrize("with_manifest", [False, True])
def test_folders_only_text2lora_writes_into_are_replaced_whole(tmp_path, marker, content, with_manifest):
    """A collection or checkpoint (an earlier version's without a manifest, or one whose files a later format
    changed) is rebuilt over: nothing in it was ever the user's."""
    old = tmp_path / "x"
    if with_manifest:
        with atomic_dir(old) as tmp:
            (tmp / marker).write_text(json.dumps(content))
        (old / marker).write_text(json.dumps({**content, "format_version": 0}))  # changed since
    else:
        old.mkdir()
        (old / marker).write_text(json.dumps(content))
    (old / "old_layout.bin").write_bytes(b"\0" * 8)
    with atomic_dir(old, force=True) as tmp:
        (tmp / marker).write_text(json.dumps(content))
    assert sorted(p.name for p in old.iterdir()) == sorted([MANIFEST, marker])
