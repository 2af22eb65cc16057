"""Checkpoints to Hugging Face weights: `quark convert` on a run directory or any of its
checkpoints gives the weights training saved, with the run's tokenizer; bad input is one line.
(Sharded FSDP2 and DeepSpeed checkpoints are converted in test_strategies.py, against torch's
and Lightning's own converters.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from quark.core.errors import QuarkError
from quark.training.checkpoints import checkpoint_format, consolidated_state_dict

from ..conftest import REPO, LaunchFn
from ..steps.test_pretrain import TINY_MODEL, TRAIN, data_run, pretrain_runs, weights  # noqa: F401 (a fixture)

# the model group of a run's config.yaml, as the pretrain tests size it
TINY = {
    "tie_embeddings": False,
    **{k.split("=")[0].removeprefix("model."): int(k.split("=")[1]) for k in TINY_MODEL},
}


def quark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quark.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.usefixtures("data_run")
def test_convert_gives_the_weights_each_checkpoint_saved_with_the_runs_tokenizer(
    launch: LaunchFn, outputs: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    launch(*TRAIN, check=True)
    [manifest] = pretrain_runs(outputs)
    run_dir = Path(manifest["run_dir"])

    done = quark("convert", str(run_dir), "--out", str(tmp_path / "last"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith(
        f"from the Lightning checkpoint {run_dir / 'checkpoints' / 'last.ckpt'}"
    )
    data_dir = Path(manifest["inputs"][0]["path"])
    assert f"tokenizer: {data_dir / 'tokenizer'}" in done.stdout
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "last")
    assert isinstance(model, LlamaForCausalLM)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "last")
    ids = torch.tensor([tokenizer.encode("item3 has value 4 and colour red")])
    exported = AutoModelForCausalLM.from_pretrained(run_dir / "hf")
    with torch.no_grad():  # the same model the run exported at its end
        assert torch.equal(model(input_ids=ids).logits, exported(input_ids=ids).logits)

    # an earlier checkpoint, moved away from its run: its own weights, given the run's config
    moved = tmp_path / "step_000004.ckpt"
    shutil.copy(run_dir / "checkpoints" / "step_000004.ckpt", moved)
    done = quark(
        "convert",
        str(moved),
        "--out",
        str(tmp_path / "early"),
        "--config",
        str(run_dir / "config.yaml"),
    )
    assert done.returncode == 0, done.stderr
    early = AutoModelForCausalLM.from_pretrained(tmp_path / "early").state_dict()
    saved = weights(moved)
    assert early.keys() == {k.removeprefix("model.") for k in saved}
    for name, tensor in early.items():
        assert torch.equal(tensor, saved[f"model.{name}"]), name
    assert not torch.equal(early["lm_head.weight"], model.state_dict()["lm_head.weight"])

    done = quark("convert", str(moved), "--out", str(tmp_path / "again"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {moved}: cannot find the config.yaml of the run that wrote it "
        f"({tmp_path.parent / 'config.yaml'}); pass --config RUN_DIR/config.yaml"
    )


def test_consolidated_state_dict_keys_are_the_hf_models(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    # what CausalLMModule (the model as `self.model`) saves, in bf16 as bf16-true training does
    state = {f"model.{k}": v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 3}, tmp_path / "bf16.ckpt")
    loaded = consolidated_state_dict(tmp_path / "bf16.ckpt")
    assert loaded.keys() == model.state_dict().keys()
    assert all(t.dtype == torch.float32 for t in loaded.values())  # full precision, widened


def test_the_export_is_checked_weight_for_weight_against_the_model_trained_whole(
    tmp_path: Path,
) -> None:
    """pretrain's check where one process holds the trained model (single, DDP, ZeRO-1/2): the
    checkpoint's weights, in the trained model's dtype, equal the trained model's; a checkpoint
    that does not hold them (here one weight changed after it was saved) fails the step."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from quark.core.errors import StepFailed
    from quark.training.export import export_checkpoint

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    trained = LlamaForCausalLM(config)
    # fp32 master weights in the checkpoint, bf16 weights in the live model (DeepSpeed bf16)
    state = {f"model.{k}": v.clone() for k, v in trained.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 3}, tmp_path / "last.ckpt")
    sample = torch.randint(0, 64, (1, 8))
    metrics = export_checkpoint(
        tmp_path / "last.ckpt", config, tmp_path / "hf", None, sample,
        trained_model=trained.to(torch.bfloat16),
    )  # fmt: skip
    assert metrics == {"hf_max_logit_diff": 0.0, "checkpoint_max_weight_diff": 0.0}

    with torch.no_grad():
        trained.model.layers[0].mlp.up_proj.weight[3, 5] += 1.0
    with pytest.raises(StepFailed, match=r"weight model\.layers\.0\.mlp\.up_proj\.weight differs"):
        export_checkpoint(
            tmp_path / "last.ckpt", config, tmp_path / "hf2", None, sample, trained_model=trained
        )


def bad_checkpoints(tmp_path: Path) -> list[tuple[Path, str]]:
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "latest").write_text("checkpoint")  # its shards are missing
    (tmp_path / "fsdp").mkdir()
    (tmp_path / "fsdp" / ".metadata").write_bytes(b"\x00garbage")
    return [
        (tmp_path / "missing.ckpt", "no such checkpoint"),
        (tmp_path / "notes.ckpt", "not a readable Lightning checkpoint (UnpicklingError"),
        (tmp_path / "plain.pt", "a torch file but not a Lightning checkpoint (no state_dict)"),
        (tmp_path / "empty", "not a checkpoint directory; expected a Lightning .ckpt file"),
        (tmp_path / "zero", "not a readable DeepSpeed checkpoint (FileNotFoundError"),
        (tmp_path / "fsdp", "not a readable torch.distributed checkpoint"),
    ]


def test_a_bad_checkpoint_is_one_error_naming_its_path(tmp_path: Path) -> None:
    for path, problem in bad_checkpoints(tmp_path):
        with pytest.raises(QuarkError) as refused:
            checkpoint_format(path)
            consolidated_state_dict(path)
        message = str(refused.value)
        assert message.startswith(f"{path}: {problem}"), message
        assert "\n" not in message


def test_convert_refuses_bad_input_with_one_line_and_exit_2(tmp_path: Path) -> None:
    unfinished, broken = tmp_path / "unfinished", tmp_path / "broken"
    for run in (unfinished, broken):
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text(OmegaConf.to_yaml({"model": TINY}))
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"\x00" * 64)  # a crash mid-write
    used = tmp_path / "used"
    used.mkdir()
    (used / "config.json").write_text("{}")
    cases = [
        (tmp_path / "nowhere", tmp_path / "a", f"{tmp_path / 'nowhere'}: no such run directory"),
        (unfinished, tmp_path / "b", f"{unfinished}: the run has no checkpoints/last.ckpt"),
        (broken, used, f"{used}: already exists and is not an empty directory"),
        (broken, tmp_path / "c", f"{broken}/checkpoints/last.ckpt: not a readable Lightning"),
    ]
    for source, out, message in cases:
        done = quark("convert", str(source), "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"error: {message}"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "c").exists()  # nothing half-written
