"""step=pretrain on a tiny model and corpus: loss falls, checkpoints resume exactly, the HF
export reproduces the logits, bad input is refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ..conftest import ITEM_DATA, LaunchFn, manifests, write_item_corpus

TINY_MODEL = [
    "model.vocab_size=600",
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.intermediate_size=172",
    "model.max_seq_len=128",
]
TRAIN = [
    "step=pretrain",
    *TINY_MODEL,
    "step.seq_len=32",
    "step.max_steps=12",
    "step.val_every_n_steps=4",
    "step.val_samples=8",
    "step.checkpoint_every_n_steps=4",
    "step.optim.warmup_steps=2",
    "step.optim.lr=1e-2",
    "trainer.micro_batch_size=4",
]


@pytest.fixture
def data_run(launch: LaunchFn, outputs: Path, tmp_path: Path) -> Path:
    corpus = write_item_corpus(tmp_path / "corpus")
    launch(*ITEM_DATA, f"data.sources.0.paths=[{corpus}/*.txt]", check=True)
    [manifest] = manifests(outputs)
    return Path(manifest["run_dir"])


def pretrain_runs(outputs: Path) -> list[dict]:
    return [m for m in manifests(outputs) if m["step"] == "pretrain"]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_pretrain_learns_checkpoints_and_exports(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    done = launch(*TRAIN, check=True)
    [manifest] = pretrain_runs(outputs)
    run_dir = Path(manifest["run_dir"])
    assert manifest["inputs"][0]["path"] == str(data_run) and manifest["inputs"][0]["kind"] == "run"
    metrics = manifest["metrics"]
    assert metrics["steps"] == 12 and metrics["hf_max_logit_diff"] == 0.0
    assert metrics["checkpoint_max_weight_diff"] == 0.0  # one process: weight for weight
    with (run_dir / "logs" / "metrics.csv").open() as handle:
        val = [
            (int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(handle) if r["val/loss"]
        ]
    # after steps 4, 8 and 12 (logged at 3, 7, 11); the fit's final validation is step 12's, not
    # a second pass over the same weights
    assert [step for step, _ in val] == [3, 7, 11], val
    assert val[-1][1] < val[0][1] - 0.5  # validation loss falls
    assert metrics["val_loss"] == pytest.approx(val[-1][1], abs=1e-6)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step_000004.ckpt",
        "step_000008.ckpt",
        "step_000012.ckpt",
    ]
    assert "hf export" in done.stdout

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "hf")
    ids = torch.tensor([tokenizer.encode("item3 has value 4 and colour red")])
    trained = {
        k.removeprefix("model."): v
        for k, v in weights(run_dir / "checkpoints" / "last.ckpt").items()
    }
    from quark.models.llama import build_llama

    reference = build_llama(
        **{k.split("=")[0].removeprefix("model."): int(k.split("=")[1]) for k in TINY_MODEL}
    )
    reference.load_state_dict(trained)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference.eval()(input_ids=ids).logits)


@pytest.mark.slow
def test_resuming_from_a_checkpoint_reaches_the_same_weights(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    launch(*TRAIN, check=True)
    [straight] = pretrain_runs(outputs)
    middle = Path(straight["run_dir"]) / "checkpoints" / "step_000004.ckpt"
    launch(*TRAIN, f"step.resume={middle}", check=True)
    resumed = pretrain_runs(outputs)[-1]
    assert resumed["resumed_from"] == str(middle)
    a = weights(Path(straight["run_dir"]) / "checkpoints" / "last.ckpt")
    b = weights(Path(resumed["run_dir"]) / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # optimizer, schedule and data position restored
    # step 4's checkpoint was saved before step 4's validation, which the resumed run owes and
    # runs first: its log has that row, at the same step and value as the uninterrupted run's
    assert validation_rows(Path(resumed["run_dir"])) == validation_rows(Path(straight["run_dir"]))


def validation_rows(run_dir: Path) -> list[tuple[str, str]]:
    """(step, val/loss) of every validation row of `run_dir`'s metrics log from step 4's (logged
    at step 3: a row logged at step s comes after s + 1 optimizer steps)."""
    rows = csv.DictReader((run_dir / "logs" / "metrics.csv").open())
    return [(r["step"], r["val/loss"]) for r in rows if r["val/loss"] and int(r["step"]) >= 3]


@pytest.mark.slow
def test_resume_auto_continues_the_unfinished_run_of_the_same_config(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    launch(*TRAIN, check=True)
    [first] = pretrain_runs(outputs)
    # make it look killed: running, not completed, with its checkpoints on disk
    manifest_path = Path(first["run_dir"]) / "manifest.json"
    manifest_path.write_text(json.dumps({**first, "status": "running"}))
    launch(*TRAIN, "step.resume=auto", check=True)
    resumed = pretrain_runs(outputs)[-1]
    assert resumed["resumed_from"] == str(Path(first["run_dir"]) / "checkpoints" / "last.ckpt")
    # last.ckpt was saved after the loop validated step 12: no validation is owed, none repeated
    # in the loop; the one row is the fit's final validation of the weights it resumed with,
    # which match the first run's
    [(step, loss)] = validation_rows(Path(resumed["run_dir"]))
    assert step == "12" and float(loss) == pytest.approx(first["metrics"]["val_loss"], abs=1e-6)
    # a different config does not match
    launch(*TRAIN, "step.optim.lr=5e-3", "step.resume=auto", check=True)
    assert pretrain_runs(outputs)[-1]["resumed_from"] is None


BAD = [
    (["model.vocab_size=200"], "model.vocab_size: 200 is smaller than the data run's tokenizer"),
    (["step.seq_len=200"], "step.seq_len: 200 exceeds the model's 128 positions"),
    (
        ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.precision=16-mixed"],
        "trainer.precision: 16-mixed needs a GPU",
    ),
    (["step.resume=/no/such.ckpt"], "step.resume: /no/such.ckpt is not a checkpoint"),
]


@pytest.mark.slow
def test_bad_training_input_is_one_line_and_exit_2(
    launch: LaunchFn, outputs: Path, data_run: Path, tmp_path: Path
) -> None:
    for overrides, message in BAD:
        done = launch(*TRAIN, *overrides)
        assert done.returncode == 2, (overrides, done.stderr)
        assert message in done.stderr.strip().splitlines()[-1], done.stderr
    done = launch(*TRAIN, f"step.data_dir={tmp_path}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"error: step.data_dir: {tmp_path} holds no token shards; "
        "give a completed data run of a corpus (not a task set)"
    )


@pytest.mark.slow
def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    done = launch(
        *TRAIN,
        "step.optim.lr=1e6",
        "step.optim.warmup_steps=0",
        "step.grad_clip=0",
        "step.checkpoint_every_n_steps=1",
    )
    assert done.returncode == 1, done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "not finite" in last_line
    assert "last good checkpoint is kept" in last_line
    [manifest] = pretrain_runs(outputs)
    assert manifest["status"] == "failed"
    checkpoints = sorted((Path(manifest["run_dir"]) / "checkpoints").glob("step_*.ckpt"))
    assert checkpoints, "the run failed before its first checkpoint: the test proves nothing"
    for checkpoint in checkpoints:  # every checkpoint on disk holds finite weights
        assert all(torch.isfinite(t).all() for t in weights(checkpoint).values())


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    common = [o for o in TRAIN if not o.startswith("trainer.micro_batch_size")] + [
        "step.max_steps=6"
    ]
    launch(*common, "trainer.micro_batch_size=4", check=True)
    launch(
        *common,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.devices=2",
        "trainer.micro_batch_size=2",
        check=True,
    )
    single, ddp = pretrain_runs(outputs)
    # rank 0 alone wrote one manifest, in the launch's own run directory
    assert ddp["status"] == "completed" and len(list(Path(ddp["run_dir"]).parent.iterdir())) == 2
    a = weights(Path(single["run_dir"]) / "checkpoints" / "last.ckpt")
    b = weights(Path(ddp["run_dir"]) / "checkpoints" / "last.ckpt")
    # The same arithmetic in another order (two half-batch gradients averaged by all-reduce
    # against one batch's): rounding differences of 1e-7, which six Adam steps at lr 1e-2
    # magnify (it divides by sqrt(v): near-zero gradients) to up to 2e-5 of a tensor's norm,
    # depending on the corpus (tmp_path is in its document ids). Other data moves every
    # tensor by 1 % of its norm or more (one process on half the batch: 1.1 % and up).
    for name in a:
        relative = float((a[name] - b[name]).norm() / b[name].norm())
        assert relative < 1e-3, (name, relative)
    assert abs(single["metrics"]["val_loss"] - ddp["metrics"]["val_loss"]) < 1e-4
