"""FSDP2 and DeepSpeed ZeRO train on CPU processes with gloo: the weights of one process with the
same global batch, exact resume from their sharded checkpoints, one consolidated HF export; and
the DeepSpeed config each conf/trainer option hands to Lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError
from quark.core.schemas import validate
from quark.resolvers import register_resolvers
from quark.training.checkpoints import consolidated_state_dict
from quark.training.strategies import build_strategy, check_layout, deepspeed_config

from ..conftest import CONF, REPO, LaunchFn
from ..steps.test_pretrain import TRAIN, data_run, pretrain_runs  # noqa: F401 (a fixture)

register_resolvers()

# six steps, a checkpoint at step 4 to resume from; global batch 4 = 1 x 4 = 2 ranks x 2
SHORT = [o for o in TRAIN if not o.startswith("trainer.micro_batch_size")] + ["step.max_steps=6"]
ON_CPU = ["trainer.accelerator=cpu", "trainer.precision=32-true"]
TWO_RANKS = [*ON_CPU, "trainer.devices=2", "trainer.micro_batch_size=2"]
DEEPSPEED_OPTIONS = {
    # option: (ZeRO stage, optimizer offloaded, parameters offloaded)
    "deepspeed_zero1": (1, False, False),
    "deepspeed_zero2": (2, False, False),
    "deepspeed_zero3": (3, False, False),
    "deepspeed_zero3_offload": (3, True, True),
}


@pytest.fixture(autouse=True)
def own_ds_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_layout and build_strategy set DS_ACCELERATOR=cpu in this process: undo it after
    each test, so the GPU test's ranks choose for themselves."""
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="launch", overrides=["step=pretrain", *overrides])
    validate(cfg)
    return cfg


def run_dir(manifest: dict) -> Path:
    return Path(manifest["run_dir"])


def logits(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir).eval()(input_ids=ids).logits


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        # sharded reductions sum in another order than one process, and one process steps
        # torch's fused AdamW where DeepSpeed and FSDP keep the default: last-bit differences.
        # Adam divides by the root of its second moment, so in a near-zero gradient (a rare
        # token's embedding row) such a difference can move a weight by a good part of lr
        # (measured: 2.2e-4 after six steps at lr 1e-2). A wrong update (a flipped sign, a
        # missing step) moves weights by lr to 2 lr, 1e-2 to 2e-2.
        assert torch.allclose(a[name], b[name], atol=1e-3, rtol=1e-4), name


def quark_convert(source: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quark.cli", "convert", str(source), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("option", sorted(DEEPSPEED_OPTIONS))
def test_every_deepspeed_option_yields_its_stage_and_offload(option: str) -> None:
    stage, offload_optimizer, offload_params = DEEPSPEED_OPTIONS[option]
    cfg = composed(
        f"trainer={option}",
        *ON_CPU,
        "trainer.micro_batch_size=3",
        "trainer.accumulate_grad_batches=2",
        "trainer.deepspeed.zero_optimization.overlap_comm=false",
    )
    check_layout(cfg)
    config = build_strategy(cfg.trainer).config
    assert config == deepspeed_config(cfg.trainer)
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero.get("offload_optimizer", {}).get("device", "none") == (
        "cpu" if offload_optimizer else "none"
    )
    assert zero.get("offload_param", {}).get("device", "none") == (
        "cpu" if offload_params else "none"
    )
    assert zero["overlap_comm"] is False  # the command-line override reached DeepSpeed
    assert config["train_micro_batch_size_per_gpu"] == 3
    # Lightning sets it from trainer.accumulate_grad_batches and refuses a config that has it
    assert "gradient_accumulation_steps" not in config


CONFLICTS = [
    (
        ["trainer=deepspeed_zero3", "trainer.deepspeed.zero_optimization.stage=2"],
        "trainer.deepspeed.zero_optimization.stage: 2 disagrees with trainer.strategy=deepspeed_zero3; "
        "choose the stage with trainer=deepspeed_zero2",
    ),
    (
        ["trainer=deepspeed_zero2", "+trainer.deepspeed.gradient_accumulation_steps=4"],
        "trainer.deepspeed.gradient_accumulation_steps: 4 disagrees with "
        "trainer.accumulate_grad_batches (1)",
    ),
    (
        ["trainer=deepspeed_zero2", "+trainer.deepspeed.gradient_clipping=0.5"],
        "trainer.deepspeed.gradient_clipping: 0.5 disagrees with step.grad_clip (1.0)",
    ),
    (
        ["trainer=deepspeed_zero1", "+trainer.deepspeed.bf16.enabled=true"],
        "trainer.deepspeed.bf16: enabled=True disagrees with trainer.precision=32-true",
    ),
    (
        ["trainer=deepspeed_zero2", "+trainer.deepspeed.optimizer.type=Adam"],
        "trainer.deepspeed.optimizer: Quark's optimizer and schedule come from step.optim",
    ),
    (
        ["trainer=deepspeed_zero3_offload", "trainer.offload_params=false"],
        "trainer.deepspeed.zero_optimization.offload_param.device: 'cpu' disagrees with "
        "trainer.offload_params=false",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), CONFLICTS)
def test_a_deepspeed_key_that_contradicts_quarks_own_is_refused(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        check_layout(composed(*overrides, *ON_CPU))
    assert str(refused.value).startswith(message)


@pytest.mark.slow
@pytest.mark.usefixtures("data_run")
def test_fsdp2_on_two_cpu_processes_matches_one_process_and_resumes_exactly(
    launch: LaunchFn, outputs: Path, tmp_path: Path
) -> None:
    launch(*SHORT, "trainer.micro_batch_size=4", check=True)
    launch(*SHORT, "trainer=fsdp", *TWO_RANKS, check=True)
    single, fsdp = pretrain_runs(outputs)
    last = run_dir(fsdp) / "checkpoints" / "last.ckpt"
    # a torch.distributed.checkpoint directory, one shard per rank
    assert (last / ".metadata").is_file() and len(list(last.glob("*.distcp"))) == 2
    weights = consolidated_state_dict(last)
    assert_close_weights(
        consolidated_state_dict(run_dir(single) / "checkpoints" / "last.ckpt"), weights
    )
    assert abs(single["metrics"]["val_loss"] - fsdp["metrics"]["val_loss"]) < 1e-4
    assert abs(fsdp["metrics"]["hf_val_loss"] - fsdp["metrics"]["val_loss"]) < 1e-4

    # the run's HF export holds what torch's own DCP converter reads from the checkpoint
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(last, tmp_path / "torch.pt")
    theirs = torch.load(tmp_path / "torch.pt", weights_only=True)["state_dict"]
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(run_dir(fsdp) / "hf").state_dict()
    for name, tensor in exported.items():
        assert torch.equal(tensor, theirs[f"model.{name}"]), name

    launch(
        *SHORT,
        "trainer=fsdp",
        *TWO_RANKS,
        f"step.resume={last.parent / 'step_000004.ckpt'}",
        check=True,
    )
    resumed = pretrain_runs(outputs)[-1]
    again = consolidated_state_dict(run_dir(resumed) / "checkpoints" / "last.ckpt")
    for name in weights:  # parameters, optimizer and data position restored from the shards
        assert torch.equal(weights[name], again[name]), name


@pytest.mark.slow
@pytest.mark.usefixtures("data_run")
def test_deepspeed_zero2_on_two_cpu_processes_matches_one_process_and_converts(
    launch: LaunchFn, outputs: Path, tmp_path: Path
) -> None:
    launch(*SHORT, "trainer.micro_batch_size=4", check=True)
    # the first DeepSpeed run on a machine compiles DeepSpeed's CPU communication op (~100 s)
    launch(*SHORT, "trainer=deepspeed_zero2", *TWO_RANKS, check=True)
    single, zero2 = pretrain_runs(outputs)
    last = run_dir(zero2) / "checkpoints" / "last.ckpt"
    assert (last / "latest").read_text().strip() == "checkpoint"
    assert len(list((last / "checkpoint").glob("*_optim_states.pt"))) == 2  # one shard per rank
    assert_close_weights(
        consolidated_state_dict(run_dir(single) / "checkpoints" / "last.ckpt"),
        consolidated_state_dict(last),
    )
    assert abs(single["metrics"]["val_loss"] - zero2["metrics"]["val_loss"]) < 1e-4

    done = quark_convert(run_dir(zero2), tmp_path / "converted")
    assert done.returncode == 0, done.stderr
    assert "from the DeepSpeed checkpoint" in done.stdout
    ids = torch.tensor([[5, 17, 42, 99, 123, 7, 300, 2]])
    converted = logits(tmp_path / "converted", ids)
    # the same as the run's own export, and as Lightning's ZeRO converter
    assert torch.equal(converted, logits(run_dir(zero2) / "hf", ids))
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict
    from transformers import AutoModelForCausalLM

    convert_zero_checkpoint_to_fp32_state_dict(last, tmp_path / "lightning.pt")
    lightning = torch.load(tmp_path / "lightning.pt", weights_only=False)["state_dict"]
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "converted")
    reference.load_state_dict({k.removeprefix("model."): v for k, v in lightning.items()})
    with torch.no_grad():
        assert torch.equal(converted, reference.eval()(input_ids=ids).logits)
    # and, across strategies, the single process's export to the weights' tolerance
    assert torch.allclose(converted, logits(run_dir(single) / "hf", ids), atol=1e-3)

    # a DeepSpeed key that contradicts Quark's is one line and exit status 2
    done = launch(
        *SHORT, "trainer=deepspeed_zero2", *TWO_RANKS, "+trainer.deepspeed.train_batch_size=64"
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: trainer.deepspeed.train_batch_size: 64 disagrees with")
    )


@pytest.mark.slow
@pytest.mark.usefixtures("data_run")
def test_deepspeed_zero1_matches_one_process_and_zero3_offload_trains(
    launch: LaunchFn, outputs: Path
) -> None:
    launch(*SHORT, "trainer.micro_batch_size=4", check=True)
    # ZeRO-1 shards the optimizer states over two ranks; ZeRO-3 with offload keeps parameters
    # and optimizer states in host memory (DeepSpeed's offload path, on one process here)
    launch(*SHORT, "trainer=deepspeed_zero1", *TWO_RANKS, check=True)
    launch(
        *SHORT, "trainer=deepspeed_zero3_offload", *ON_CPU, "trainer.micro_batch_size=4", check=True
    )
    single, zero1, offload = pretrain_runs(outputs)
    zero1_last = run_dir(zero1) / "checkpoints" / "last.ckpt"
    assert len(list((zero1_last / "checkpoint").glob("*_optim_states.pt"))) == 2  # per rank
    reference = consolidated_state_dict(run_dir(single) / "checkpoints" / "last.ckpt")
    assert_close_weights(reference, consolidated_state_dict(zero1_last))
    assert abs(single["metrics"]["val_loss"] - zero1["metrics"]["val_loss"]) < 1e-4

    trained_with = OmegaConf.load(run_dir(offload) / "config.yaml").trainer.deepspeed
    assert trained_with.zero_optimization.offload_param.device == "cpu"
    assert trained_with.zero_optimization.offload_optimizer.device == "cpu"
    assert offload["status"] == "completed" and offload["metrics"]["steps"] == 6
    # it learned (the untrained model scores about ln(600) = 6.4), and its export scores as the
    # run did; for its weights against one process, see the next test
    assert offload["metrics"]["val_loss"] < 5.0
    assert offload["metrics"]["hf_val_loss"] == pytest.approx(
        offload["metrics"]["val_loss"], abs=1e-4
    )


@pytest.mark.slow
@pytest.mark.usefixtures("data_run")
@pytest.mark.xfail(
    strict=True,
    reason="open: on CPU, ZeRO-3 (with or without offload, one process or two) updates about "
    "15 % of the weights with the opposite sign of one process from the first step on; ZeRO-1 "
    "and ZeRO-2 match (docs/scaling.md). Strict: a fix makes this test fail until the mark goes.",
)
def test_deepspeed_zero3_on_one_process_matches_one_process_without_deepspeed(
    launch: LaunchFn, outputs: Path
) -> None:
    one_step = [o for o in SHORT if not o.startswith("step.max_steps")] + ["step.max_steps=1"]
    launch(*one_step, "trainer.micro_batch_size=4", check=True)
    launch(*one_step, "trainer=deepspeed_zero3", *ON_CPU, "trainer.micro_batch_size=4", check=True)
    single, zero3 = pretrain_runs(outputs)
    assert_close_weights(
        consolidated_state_dict(run_dir(single) / "checkpoints" / "last.ckpt"),
        consolidated_state_dict(run_dir(zero3) / "checkpoints" / "last.ckpt"),
    )


@pytest.mark.slow
@pytest.mark.usefixtures("data_run")
def test_deepspeed_zero3_resumes_exactly_from_its_sharded_checkpoint(
    launch: LaunchFn, outputs: Path, tmp_path: Path
) -> None:
    launch(*SHORT, "trainer=deepspeed_zero3", *TWO_RANKS, check=True)
    [straight] = pretrain_runs(outputs)
    middle = run_dir(straight) / "checkpoints" / "step_000004.ckpt"
    assert len(list((middle / "checkpoint").glob("zero_pp_rank_*_model_states.pt"))) == 2
    launch(*SHORT, "trainer=deepspeed_zero3", *TWO_RANKS, f"step.resume={middle}", check=True)
    resumed = pretrain_runs(outputs)[-1]
    assert resumed["resumed_from"] == str(middle)
    a = consolidated_state_dict(run_dir(straight) / "checkpoints" / "last.ckpt")
    b = consolidated_state_dict(run_dir(resumed) / "checkpoints" / "last.ckpt")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # each rank held half of every weight; the export is whole and scores as training did
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(run_dir(straight) / "hf").state_dict()
    assert all(torch.equal(exported[name], a[name]) for name in a)
    assert straight["metrics"]["hf_val_loss"] == pytest.approx(
        straight["metrics"]["val_loss"], abs=1e-4
    )


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.usefixtures("data_run")
def test_deepspeed_zero2_in_bf16_on_one_gpu_through_lightnings_own_strategy(
    launch: LaunchFn, outputs: Path, tmp_path: Path
) -> None:
    from lightning.pytorch.strategies import DeepSpeedStrategy

    cfg = composed("trainer=deepspeed_zero2", "trainer.devices=1")
    assert type(build_strategy(cfg.trainer)) is DeepSpeedStrategy  # not the CPU subclass
    launch(
        *SHORT,
        "trainer=deepspeed_zero2",
        "trainer.devices=1",
        "trainer.micro_batch_size=4",
        check=True,
    )
    [run] = pretrain_runs(outputs)
    metrics = run["metrics"]
    assert metrics["steps"] == 6 and metrics["val_loss"] < 6.0
    # one process held the model whole (ZeRO-2 shards optimizer states only): the checkpoint
    # holds its bf16 weights exactly
    assert metrics["checkpoint_max_weight_diff"] == 0.0
    done = quark_convert(run_dir(run), tmp_path / "converted")
    assert done.returncode == 0, done.stderr
    ids = torch.tensor([[5, 17, 42, 99]])
    assert torch.equal(logits(tmp_path / "converted", ids), logits(run_dir(run) / "hf", ids))
