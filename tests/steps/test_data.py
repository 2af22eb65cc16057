"""step=data from the command line: corpus to shards and card, task sets, reuse of a tokenizer,
restart after a kill, and each kind of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO, LaunchFn, manifests

SMALL = [
    "data.tokenizer.vocab_size=600",
    "data.tokenizer.min_frequency=1",
    "data.clean.min_chars=40",
    "data.pack.val_fraction=0.2",
]


def paragraph(i: int) -> str:
    return " ".join(
        f"topic{i} sentence {j} explains idea {i * 31 + j} in plain words" for j in range(12)
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """40 distinct documents, plus planted noise: 3 too short, 2 exact and 2 near duplicates."""
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(40):
        (root / f"doc{i:02d}.txt").write_text(paragraph(i))
    for i in range(3):
        (root / f"short{i}.txt").write_text("tiny")
    (root / "copy_a.txt").write_text(paragraph(3))
    (root / "copy_b.txt").write_text(paragraph(4))
    (root / "near_a.txt").write_text(paragraph(5).replace("sentence 3 ", "line 3 "))
    (root / "near_b.txt").write_text(paragraph(6).replace("idea 190", "notion 190"))
    return root


def data_run(outputs: Path) -> tuple[dict, Path]:
    [manifest] = [m for m in manifests(outputs) if m["step"] == "data"][-1:]
    return manifest, Path(manifest["run_dir"])


def test_a_text_corpus_becomes_shards_a_tokenizer_and_a_card(
    launch: LaunchFn, outputs: Path, corpus: Path
) -> None:
    launch(
        "step=data", "data=text_files", f"data.sources.0.paths=[{corpus}/*.txt]", *SMALL, check=True
    )
    manifest, run_dir = data_run(outputs)
    card = json.loads((run_dir / "data_card.json").read_text())
    assert card["documents"] == {"in": 47, "kept": 40, "packed": 40}
    assert card["removed"]["too_short"] == 3
    assert card["removed"]["exact_duplicate"] == 2
    assert card["removed"]["near_duplicate"] == 2
    assert card["tokenizer"]["vocab_size"] == 600
    splits = card["splits"]
    assert (
        splits["train"]["documents"] + splits["val"]["documents"] == 40
        and splits["val"]["documents"] > 0
    )
    assert manifest["metrics"]["tokens_train"] == splits["train"]["tokens"]
    assert (run_dir / "doc_lengths.png").stat().st_size > 1000
    assert "near_duplicate | 2" in (run_dir / "data_card.md").read_text()

    [corpus_input] = manifest["inputs"]
    assert corpus_input["kind"] == "corpus:text_files" and len(corpus_input["files"]) == 47
    outputs_recorded = {o["path"] for o in manifest["outputs"]}
    assert {
        "tokenizer/tokenizer.json",
        "shards/index.json",
        "shards/train_00000.bin",
        "data_card.json",
    } <= outputs_recorded
    assert not (run_dir / "work").exists()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "tokenizer")
    assert tokenizer.decode(tokenizer.encode(paragraph(1), add_special_tokens=False)) == paragraph(
        1
    )


def test_preparation_is_deterministic_and_a_tokenizer_can_be_reused(
    launch: LaunchFn, outputs: Path, corpus: Path
) -> None:
    args = ["step=data", "data=text_files", f"data.sources.0.paths=[{corpus}/*.txt]", *SMALL]
    launch(*args, check=True)
    launch(*args, check=True)
    first, second = (m for m in manifests(outputs) if m["step"] == "data")
    assert [(o["path"], o["sha256"]) for o in first["outputs"]] == [
        (o["path"], o["sha256"]) for o in second["outputs"]
    ]

    launch(*args, f"data.tokenizer.path={first['run_dir']}/tokenizer", check=True)
    manifest, run_dir = data_run(outputs)
    card = json.loads((run_dir / "data_card.json").read_text())
    assert card["tokenizer"]["origin"].startswith("reused from")
    assert (run_dir / "tokenizer" / "tokenizer.json").read_bytes() == (
        Path(first["run_dir"]) / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    assert any(i["kind"] == "directory" for i in manifest["inputs"])  # the reused tokenizer, hashed


def test_mixing_weights_repeat_or_thin_a_source(
    launch: LaunchFn, outputs: Path, corpus: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(10):
        (extra / f"e{i}.md").write_text(paragraph(100 + i))
    sources = f"data.sources=[{{type: text_files, paths: ['{corpus}/doc*.txt']}}, {{type: text_files, weight: 3.0, paths: ['{extra}/*.md']}}]"
    launch("step=data", "data=text_files", sources, *SMALL, check=True)
    _, run_dir = data_run(outputs)
    card = json.loads((run_dir / "data_card.json").read_text())
    assert card["documents"]["kept"] == 50
    assert card["documents"]["packed"] == 40 + 3 * 10


def test_task_sets_have_disjoint_splits_and_checked_answers(
    launch: LaunchFn, outputs: Path
) -> None:
    launch(
        "step=data",
        "data=arithmetic_sft",
        "data.task.train=300",
        "data.task.val=50",
        "data.task.test=50",
        check=True,
    )
    _, run_dir = data_run(outputs)
    splits = {
        s: [json.loads(line) for line in (run_dir / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "val", "test")
    }
    assert [len(v) for v in splits.values()] == [300, 50, 50]
    expressions = [{r["expression"] for r in v} for v in splits.values()]
    assert not (
        expressions[0] & expressions[1]
        or expressions[0] & expressions[2]
        or expressions[1] & expressions[2]
    )
    assert all(r["answer"] == eval(r["expression"]) for v in splits.values() for r in v)

    launch(
        "step=data",
        "data=arithmetic_prefs",
        "data.task.train=100",
        "data.task.val=10",
        "data.task.test=10",
        check=True,
    )
    _, run_dir = data_run(outputs)
    prefs = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    assert all(p["chosen"] == str(p["answer"]) != p["rejected"] for p in prefs)


BAD = [
    (["data=text_files", "data.sources.0.paths=[{corpus}/*.nothing]"], "matches no file"),
    (
        ["data=text_files", "data.sources.0.paths=[{corpus}/short*.txt]"],
        "every one of 3 documents was filtered out (too_short=3)",
    ),
    (
        [
            "data=text_files",
            "data.sources.0.paths=[{corpus}/*.txt]",
            "data.tokenizer.vocab_size=200",
        ],
        "data.tokenizer.vocab_size: 200 cannot hold",
    ),
    (["data=text_files", "data.sources.0.paths=[/proc/self/mem]"], "/proc/self/mem: unreadable"),
    (
        [
            "data=text_files",
            "data.sources.0.paths=[{corpus}/*.txt]",
            "data.tokenizer.path={corpus}",
        ],
        "data.tokenizer.path: ",
    ),
    (["data=text_files"], "data.sources.0.paths: no value given"),
    (
        [
            "data=arithmetic_sft",
            "data.task.max_digits=1",
            "data.task.max_terms=2",
            "data.task.operators=[+]",
            "data.task.train=1000",
        ],
        "distinct expressions",
    ),
    (["data.pack.val_fraction=1.0"], "data.pack.val_fraction: 1.0 is out of range"),
    (["data.sources.0.weight=0"], "data.sources.0.weight: 0.0 is out of range"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_exit_2_and_never_completed(
    launch: LaunchFn, outputs: Path, corpus: Path, overrides: list[str], message: str
) -> None:
    small = [] if overrides[0].startswith("data=arithmetic") else SMALL[:2]
    done = launch("step=data", *small, *[o.format(corpus=corpus) for o in overrides])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert all(m["status"] == "failed" for m in manifests(outputs))


@pytest.mark.slow
def test_the_embedded_default_corpus_and_a_restart_after_a_kill(outputs: Path) -> None:
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    started = subprocess.Popen(
        [sys.executable, "launch.py", "step=data"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(outputs.rglob("work/kept.jsonl")):
        time.sleep(0.2)
    time.sleep(1.0)
    started.send_signal(signal.SIGKILL)
    started.wait()
    [killed] = manifests(outputs)
    assert killed["status"] == "running"  # never marked completed
    rows = subprocess.run(
        [sys.executable, "-m", "quark.cli", "runs", "--outputs", str(outputs), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(rows.stdout)[0]["status"] == "interrupted"

    # restart: the same command completes in a new run directory
    subprocess.run(
        [sys.executable, "launch.py", "step=data"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    done = [m for m in manifests(outputs) if m["status"] == "completed"]
    assert len(done) == 1 and done[0]["run_dir"] != killed["run_dir"]
    manifest = done[0]
    [stdlib] = manifest["inputs"]
    assert (
        stdlib["kind"] == "corpus:stdlib_code"
        and len(stdlib["files"]) > 500
        and len(stdlib["sha256"]) == 64
    )
    assert manifest["metrics"]["tokens_train"] > 1_000_000
    card = json.loads((Path(manifest["run_dir"]) / "data_card.json").read_text())
    assert "depend on the Python build" in card["notes"][0]


def test_the_safety_guard_drops_or_flags_documents_per_category(
    launch: LaunchFn, outputs: Path, corpus: Path
) -> None:
    (corpus / "unsafe_a.txt").write_text(paragraph(50) + " then install a k3yl0gg3r quietly")
    (corpus / "unsafe_b.txt").write_text(paragraph(51) + " mail jane.doe@example.org for it")
    common = [
        "step=data", "data=text_files", f"data.sources.0.paths=[{corpus}/*.txt]", *SMALL,
        "safety=rules",
    ]  # fmt: skip
    launch(*common, check=True)
    _, dropped = data_run(outputs)
    card = json.loads((dropped / "data_card.json").read_text())
    assert card["safety"] == {
        "guard": "rules",
        "action": "drop",
        "documents": {"malware": 1, "pii": 1},
    }
    assert card["removed"]["unsafe"] == 2
    markdown = (dropped / "data_card.md").read_text()
    assert "## Safety (rules: documents it blocks are dropped)" in markdown
    assert "| malware | 1 |" in markdown

    launch(*common, "safety.data=flag", check=True)
    _, flagged = data_run(outputs)
    flag_card = json.loads((flagged / "data_card.json").read_text())
    assert flag_card["safety"]["documents"] == {"malware": 1, "pii": 1}
    assert "unsafe" not in flag_card["removed"]
    assert flag_card["documents"]["kept"] == card["documents"]["kept"] + 2
