"""step=align from the command line, on a tiny fine-tuned model made on the fly: DPO raising
the implicit reward accuracy without losing the fine-tuned answers, the same run with the
reference's log-probs computed ahead, resuming, the reward model, and bad input refused with
one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ..conftest import manifests
from .conftest import PAIRS, newest
from .test_finetune import FAST as FINETUNE

FAST = [
    "step=align",
    "step.seq_len=32",
    "step.max_steps=30",
    "step.val_every_n_steps=10",
    "step.val_samples=8",
    "step.checkpoint_every_n_steps=10",
    "step.eval_samples=8",
    "step.max_new_tokens=4",
    "step.optim.lr=3e-4",
    "step.optim.warmup_steps=2",
    "trainer.micro_batch_size=4",
]


def wrong(answer: str) -> str:
    return str(int(answer) + 1)


@pytest.fixture(scope="module")
def tuned(sft_experiment: SimpleNamespace) -> SimpleNamespace:
    """The experiment with a fine-tuned model (the newest finetune run) and a directory of
    preferences over its sums: chosen the right answer, rejected one more (val is train)."""
    base = sft_experiment
    base.launch(*FINETUNE, f"step.data_dir={base.pairs}", check=True)
    prefs = base.outputs.parent / "user_prefs"
    prefs.mkdir()
    lines = "".join(
        json.dumps({"prompt": p, "chosen": r, "rejected": wrong(r)}) + "\n" for p, r in PAIRS
    )
    (prefs / "train.jsonl").write_text(lines)
    (prefs / "val.jsonl").write_text(lines)
    return SimpleNamespace(
        **vars(base), finetune=newest(base.outputs, "finetune"), user_prefs=prefs
    )


@pytest.fixture(scope="module")
def dpo_run(tuned: SimpleNamespace) -> dict:
    tuned.launch(*FAST, f"step.data_dir={tuned.user_prefs}", check=True)
    return [m for m in manifests(tuned.outputs) if m["step"] == "align"][-1]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_dpo_prefers_the_chosen_answers_and_keeps_the_finetuned_ones(
    tuned: SimpleNamespace, dpo_run: dict
) -> None:
    from transformers import AutoModelForCausalLM

    # step.init_from=null: the newest finetune run
    assert [(i["role"], i["path"]) for i in dpo_run["inputs"]] == [
        ("model", str(tuned.finetune)),
        ("data", str(tuned.user_prefs)),
    ]
    metrics = dpo_run["metrics"]
    assert metrics["val_reward_accuracy"] >= 0.75 and metrics["val_reward_margin"] > 0, metrics
    assert metrics["val_accuracy"] >= metrics["val_accuracy_before"] - 1 / 8, metrics
    assert metrics["hf_max_logit_diff"] < 1e-4 and metrics["steps"] == 30
    run_dir = Path(dpo_run["run_dir"])
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert f"train/{name}" in header and f"val/{name}" in header, name
    for name in ("logps/chosen", "logps/rejected"):
        assert f"train/{name}" in header, name
    # the export moved away from the reference: DPO trained it
    aligned = AutoModelForCausalLM.from_pretrained(run_dir / "hf").eval()
    start = AutoModelForCausalLM.from_pretrained(tuned.finetune / "hf").eval()
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        assert (aligned(input_ids=ids).logits - start(input_ids=ids).logits).abs().max() > 1e-3
    answers = [json.loads(line) for line in (run_dir / "val_answers.jsonl").open()]
    assert [a["reference"] for a in answers] == [r for _, r in PAIRS]
    # evaluate and serve now find the aligned model first
    from quark.core.step_registry import model_steps

    assert model_steps()[0] == "align"


@pytest.mark.slow
def test_precomputed_reference_log_probs_train_the_same_model(
    tuned: SimpleNamespace, dpo_run: dict
) -> None:
    tuned.launch(
        *FAST,
        f"step.data_dir={tuned.user_prefs}",
        "align.precompute_reference=true",
        check=True,
    )
    ahead = newest(tuned.outputs, "align")
    live = weights(Path(dpo_run["run_dir"]) / "checkpoints" / "last.ckpt")
    computed = weights(ahead / "checkpoints" / "last.ckpt")
    assert live.keys() == computed.keys()
    for name in live:
        # the same log-probs, up to the order of float sums in differently padded batches
        assert torch.allclose(live[name], computed[name], atol=1e-5), name


@pytest.mark.slow
def test_resuming_dpo_from_a_checkpoint_reaches_the_same_weights(
    tuned: SimpleNamespace, dpo_run: dict
) -> None:
    middle = Path(dpo_run["run_dir"]) / "checkpoints" / "step_000020.ckpt"
    tuned.launch(*FAST, f"step.data_dir={tuned.user_prefs}", f"step.resume={middle}", check=True)
    resumed = newest(tuned.outputs, "align")
    assert json.loads((resumed / "manifest.json").read_text())["resumed_from"] == str(middle)
    a = weights(Path(dpo_run["run_dir"]) / "checkpoints" / "last.ckpt")
    b = weights(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_reward_model_ranks_chosen_above_rejected(tuned: SimpleNamespace) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tuned.launch(
        # the option's own rate (3e-3 collapsed from one fine-tuned start: loss stayed at ln 2)
        *FAST, "align=reward_model", f"step.data_dir={tuned.user_prefs}", "step.optim.lr=1e-3",
        "step.max_steps=60", check=True,
    )  # fmt: skip
    run_dir = newest(tuned.outputs, "align")
    metrics = json.loads((run_dir / "manifest.json").read_text())["metrics"]
    assert metrics["val_accuracy"] >= 0.875 and metrics["val_margin"] > 0, metrics
    assert metrics["hf_max_logit_diff"] < 1e-4
    assert not (run_dir / "hf").exists()  # not a language model: later steps pass it over
    reward_dir = run_dir / "reward_model"
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)

    def score(prompt: str, answer: str) -> float:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            tokenize=False,
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            return float(model(**ids).logits[0, 0])

    ranked = [score(p, r) > score(p, wrong(r)) for p, r in PAIRS]
    assert sum(ranked) / len(ranked) == metrics["val_accuracy"]


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(tuned: SimpleNamespace, tmp_path: Path) -> None:
    from quark.data.tokenizer import save_hf_tokenizer, train_tokenizer

    def prefs(name: str, records: list[dict]) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        lines = "".join(json.dumps(r) + "\n" for r in records)
        (directory / "train.jsonl").write_text(lines)
        (directory / "val.jsonl").write_text(lines)
        return directory

    no_rejected = prefs("no_rejected", [{"prompt": "What is 1 + 2?", "chosen": "3"}])
    same = prefs("same", [{"prompt": "What is 1 + 2?", "chosen": "3", "rejected": "3"}])
    other = tmp_path / "other_tokenizer"
    shutil.copytree(tuned.finetune / "hf", other)
    spec = SimpleNamespace(
        vocab_size=600, min_frequency=1, bos_token="<|bos|>", eos_token="<|eos|>",
        pad_token="<|pad|>",
    )  # fmt: skip
    save_hf_tokenizer(
        train_tokenizer((f"word{i} " * 3 for i in range(2000)), spec), other, spec, 64
    )
    with_prefs = f"step.data_dir={tuned.user_prefs}"
    cases = [
        (
            ["experiment_name=other"],
            "step.init_from: no completed finetune run in experiment 'other' under "
            f"{tuned.outputs}; make one with: python launch.py pipeline=quickstart_sft, or give "
            "a finetune or align run directory, or a Hugging Face model directory (config.json, "
            "weights, tokenizer)",
        ),
        (
            [f"step.data_dir={no_rejected}"],
            f"step.data_dir: {no_rejected} holds no preference splits (train.jsonl, val.jsonl "
            "with prompt, chosen and rejected); make one with: python launch.py step=data "
            "data=arithmetic_prefs, or give a directory holding train.jsonl and val.jsonl of "
            "prompt/chosen/rejected records",
        ),
        (
            [f"step.data_dir={same}"],
            f"{same / 'train.jsonl'}: line 1: chosen and rejected are the same answer ('3'); a "
            "preference needs two different answers",
        ),
        (
            [with_prefs, f"step.reference={other}"],
            f"step.reference: the tokenizer in {other} is not the starting model's",
        ),
        (
            [with_prefs, "trainer=fsdp", "trainer.accelerator=cpu"],
            "align.precompute_reference: false keeps a whole reference model beside the policy, "
            "which trainer.strategy 'fsdp' shards; set align.precompute_reference=true, or use "
            "trainer=cpu, gpu or ddp",
        ),
        (
            [with_prefs, "align.loss_type=kto"],
            "align.loss_type: 'kto' is not a loss of align=dpo; allowed: sigmoid, hinge, ipo",
        ),
    ]
    before = len(manifests(tuned.outputs))
    for overrides, message in cases:
        done = tuned.launch(*FAST, *overrides)
        assert done.returncode == 2, (overrides, done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {message}"), (overrides, last)
        assert "Traceback" not in done.stderr
    completed = [m for m in manifests(tuned.outputs)[before:] if m["status"] == "completed"]
    assert completed == []


GRPO = [
    *FAST,
    "align=grpo",
    "step.max_steps=6",
    "step.val_every_n_steps=3",
    "step.checkpoint_every_n_steps=3",
    "align.num_generations=4",
    "trainer.micro_batch_size=2",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def prompts(tuned: SimpleNamespace) -> Path:
    """The sums as prompt-only records with their answers (val is train)."""
    directory = tuned.outputs.parent / "user_prompts"
    directory.mkdir()
    lines = "".join(json.dumps({"prompt": p, "answer": int(r)}) + "\n" for p, r in PAIRS)
    (directory / "train.jsonl").write_text(lines)
    (directory / "val.jsonl").write_text(lines)
    return directory


@pytest.mark.slow
def test_grpo_samples_rewards_logs_and_resumes_exactly(
    tuned: SimpleNamespace, prompts: Path
) -> None:
    tuned.launch(*GRPO, f"step.data_dir={prompts}", check=True)
    run_dir = newest(tuned.outputs, "align")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert {"val_accuracy_before", "val_accuracy", "val_reward"} <= set(metrics), metrics
    assert metrics["steps"] == 6 and metrics["hf_max_logit_diff"] < 1e-4
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in (
        "train/reward",
        "train/reward_std",
        "train/kl",
        "train/accuracy",
        "train/completions/mean_length",
        "train/clip_ratio/region_mean",
        "val/reward",
        "val/accuracy",
    ):
        assert name in header, name
    # the sampling is seeded by step: a resumed run samples, and so trains, the same
    middle = run_dir / "checkpoints" / "step_000003.ckpt"
    tuned.launch(*GRPO, f"step.data_dir={prompts}", f"step.resume={middle}", check=True)
    resumed = newest(tuned.outputs, "align")
    a = weights(run_dir / "checkpoints" / "last.ckpt")
    b = weights(resumed / "checkpoints" / "last.ckpt")
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_grpo_takes_a_python_reward_and_stops_on_one_that_raises(
    tuned: SimpleNamespace, prompts: Path, tmp_path: Path
) -> None:
    (tmp_path / "my_rewards.py").write_text(
        "def shorter(prompts, completions, answer, **columns):\n"
        "    assert len(prompts) == len(completions) == len(answer)\n"
        "    return [-float(len(c)) for c in completions]\n"
        "\n"
        "def broken(prompts, completions, **columns):\n"
        "    raise ValueError('no verifier here')\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    common = [*GRPO, f"step.data_dir={prompts}", "step.max_steps=2"]
    tuned.launch(*common, "align.reward=my_rewards:shorter", env=env, check=True)
    run_dir = newest(tuned.outputs, "align")
    rewards = [
        float(row["val/reward"])
        for row in _rows(run_dir / "logs" / "metrics.csv")
        if row.get("val/reward")
    ]
    assert rewards and all(r <= 0 for r in rewards)  # minus the answers' lengths

    done = tuned.launch(*common, "align.reward=my_rewards:broken", env=env)
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: align.reward: my_rewards:broken raised ValueError: no verifier here; ")
    )
    assert "Traceback" not in done.stderr
    failed = json.loads((newest(tuned.outputs, "align") / "manifest.json").read_text())
    assert failed["status"] == "failed"

    done = tuned.launch(*common, "align.reward=my_rewards:absent", env=env)
    assert done.returncode == 2
    assert "align.reward: my_rewards has no callable absent" in done.stderr


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path) as lines:
        return list(csv.DictReader(lines))
