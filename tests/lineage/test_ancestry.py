"""quark.lineage.ancestry and `quark lineage`: the tree of a run's inputs, each re-verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from quark.core.run import describe_input
from quark.lineage.ancestry import CHANGED, MISSING, UNCHANGED, lineage

from ..conftest import REPO
from .conftest import MakeRun, hf_files


def chain(make_run: MakeRun, tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text")
    data = make_run("data", {"shards/index.json": "{}"}, inputs={"corpus": corpus})
    model = make_run("pretrain", hf_files(), inputs={"data": data})
    export = make_run("optimize", {"exports/hf/model.safetensors": "w"}, inputs={"model": model})
    return corpus, data, model, export


def test_the_tree_holds_every_ancestor_with_its_role_and_check(
    make_run: MakeRun, tmp_path: Path
) -> None:
    corpus, data, model, export = chain(make_run, tmp_path)
    tree = lineage(export)
    assert (tree.step, tree.status, tree.check) == ("optimize", "completed", None)
    [pretrain] = tree.inputs
    [data_node] = pretrain.inputs
    [corpus_node] = data_node.inputs
    assert [(n.path, n.role, n.check) for n in (pretrain, data_node, corpus_node)] == [
        (str(model), "model", UNCHANGED),
        (str(data), "data", UNCHANGED),
        (str(corpus.resolve()), "corpus", UNCHANGED),
    ]
    assert pretrain.config_hash and pretrain.versions.get("python")
    assert tree.changed() == []


def test_an_edited_output_a_changed_file_and_a_removed_one_are_marked(
    make_run: MakeRun, tmp_path: Path
) -> None:
    corpus, data, _model, export = chain(make_run, tmp_path)
    (data / "shards" / "index.json").write_text('{"edited": true}')
    corpus.write_text("other text")
    tree = lineage(export)
    data_node = tree.inputs[0].inputs[0]
    assert (data_node.check, data_node.inputs[0].check) == (CHANGED, CHANGED)
    corpus.unlink()
    assert lineage(export).inputs[0].inputs[0].inputs[0].check == MISSING
    assert [n.path for n in lineage(export).changed()] == [str(data), str(corpus.resolve())]


def test_a_corpus_record_is_checked_file_by_file(make_run: MakeRun, tmp_path: Path) -> None:
    from quark.core.files import sha256_file, sha256_json

    root = tmp_path / "texts"
    root.mkdir()
    (root / "a.txt").write_text("a")
    record = {
        "path": str(root),
        "kind": "corpus:text_files",
        "sha256": sha256_json([("a.txt", sha256_file(root / "a.txt"))]),
        "files": ["a.txt"],
    }
    data = make_run("data", {"shards/index.json": "{}"})
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["inputs"] = [{"role": "data.sources.0", **record}]
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert lineage(data).inputs[0].check == UNCHANGED
    (root / "a.txt").write_text("b")
    assert lineage(data).inputs[0].check == CHANGED


def test_quark_lineage_prints_the_tree_json_and_exits_1_on_a_change(
    make_run: MakeRun, tmp_path: Path
) -> None:
    _corpus, data, model, export = chain(make_run, tmp_path)

    def quark(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "quark.cli", "lineage", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)

    shown = quark(str(export))
    assert shown.returncode == 0, shown.stderr
    for text in ("optimize", "pretrain", "as model", "data", "verified", "config "):
        assert text in shown.stdout
    as_json = json.loads(quark(str(export), "--json").stdout)
    assert as_json["inputs"][0]["inputs"][0]["path"] == str(data)
    (model / "hf" / "config.json").write_text("{}")
    changed = quark(str(export))
    assert changed.returncode == 1
    assert "CHANGED" in changed.stdout and "1 input(s) changed or missing" in changed.stdout
    not_a_run = quark(str(tmp_path))
    assert not_a_run.returncode == 2
    assert (
        not_a_run.stderr.strip()
        == f"error: {tmp_path}: not a Quark run directory (no manifest.json)"
    )
    assert describe_input  # the records the tree re-checks are the ones steps write
