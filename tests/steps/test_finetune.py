"""step=finetune from the command line, on a tiny pretrain run made on the fly: full and LoRA
fine-tuning, accuracy rising, the exports (chat template, merged LoRA, adapter), resuming, and
bad input refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ..conftest import CONF, manifests
from .conftest import PAIRS, newest

FAST = [
    "step=finetune",
    "step.seq_len=32",
    "step.max_steps=60",
    "step.val_every_n_steps=20",
    "step.val_samples=8",
    "step.checkpoint_every_n_steps=20",
    "step.eval_samples=8",
    "step.max_new_tokens=4",
    "step.optim.lr=3e-3",
    "step.optim.warmup_steps=2",
    "trainer.micro_batch_size=4",
]


@pytest.fixture(scope="module")
def base(sft_experiment: SimpleNamespace) -> SimpleNamespace:
    return sft_experiment


@pytest.fixture(scope="module")
def full_run(base: SimpleNamespace) -> dict:
    """Full fine-tuning of the newest pretrain run (step.init_from=null) on the user pairs."""
    base.launch(*FAST, f"step.data_dir={base.pairs}", check=True)
    return [m for m in manifests(base.outputs) if m["step"] == "finetune"][-1]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_full_finetuning_raises_accuracy_and_exports_a_chat_model(
    base: SimpleNamespace, full_run: dict
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quark.eval.exact_match import greedy_exact_match

    assert [(i["path"], i["kind"]) for i in full_run["inputs"]] == [
        (str(base.pretrain), "run"),
        (str(base.pairs), "directory"),
    ]
    metrics = full_run["metrics"]
    assert metrics["val_accuracy_before"] == 0.0
    assert metrics["val_accuracy"] >= 0.75, metrics
    assert metrics["steps"] == 60 and metrics["hf_max_logit_diff"] == 0.0

    hf = Path(full_run["run_dir"]) / "hf"
    tokenizer = AutoTokenizer.from_pretrained(hf)
    model = AutoModelForCausalLM.from_pretrained(hf)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": PAIRS[0][0]}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == f"<|user|>{PAIRS[0][0]}<|end|><|assistant|>"  # the template travels with it
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end in model.generation_config.eos_token_id
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
        )
        for p, _ in PAIRS
    ]
    exported = greedy_exact_match(
        model, tokenizer, prompts, [r for _, r in PAIRS], stop_token_ids=[end]
    )
    assert (
        exported.accuracy == metrics["val_accuracy"]
    )  # the export answers as the trained model did
    answers = [
        json.loads(line) for line in (Path(full_run["run_dir"]) / "val_answers.jsonl").open()
    ]
    assert [a["reference"] for a in answers] == [r for _, r in PAIRS]


@pytest.mark.slow
def test_defaults_take_the_newest_pretrain_run_and_the_newest_pair_run(
    base: SimpleNamespace,
) -> None:
    from hydra import compose, initialize_config_dir

    from quark.core.schemas import validate
    from quark.resolvers import register_resolvers
    from quark.steps.finetune import inputs

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="launch", overrides=["step=finetune", f"paths.output_dir={base.outputs}"]
        )
    validate(cfg)
    found = inputs(cfg)
    # the preference run is newer, but holds no pairs
    assert (found.model.source, found.pairs_dir) == (base.pretrain, base.sft)
    assert found.model.directory == base.pretrain / "hf"


@pytest.mark.slow
def test_lora_through_the_sft_pipeline_exports_merged_model_and_adapter(
    base: SimpleNamespace, full_run: dict
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base.launch(
        "pipeline=sft",
        "peft=lora",
        f"++step.init_from={full_run['run_dir']}",  # a finetune run: its hf/
        *(f"++{o}" for o in FAST[1:] if o.startswith("step.")),
        "++step.max_steps=6",
        "trainer.micro_batch_size=4",
        check=True,
    )
    lora_run = newest(base.outputs, "finetune")
    manifest = json.loads((lora_run / "manifest.json").read_text())
    assert manifest["inputs"][0]["path"] == full_run["run_dir"]
    assert manifest["inputs"][1]["path"] == str(newest(base.outputs, "data"))  # the stage's pairs
    metrics = manifest["metrics"]
    assert metrics["trainable_params"] < 0.5 * full_run["metrics"]["trainable_params"]
    assert metrics["merge_max_logit_diff"] < 1e-4

    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    start = AutoModelForCausalLM.from_pretrained(Path(full_run["run_dir"]) / "hf").eval()
    with torch.no_grad():
        before = start(input_ids=ids).logits
        adapted = (
            PeftModel.from_pretrained(start, lora_run / "adapter").eval()(input_ids=ids).logits
        )
        merged = AutoModelForCausalLM.from_pretrained(lora_run / "hf").eval()(input_ids=ids).logits
    assert (adapted - before).abs().max() > 1e-3  # the adapter changed the model
    assert torch.allclose(merged, adapted, atol=1e-5)


@pytest.mark.slow
def test_resuming_from_a_checkpoint_reaches_the_same_weights(
    base: SimpleNamespace, full_run: dict
) -> None:
    # step 20 of 4-sample batches over 8 pairs: ten passes in, the order must carry on
    middle = Path(full_run["run_dir"]) / "checkpoints" / "step_000020.ckpt"
    base.launch(*FAST, f"step.data_dir={base.pairs}", f"step.resume={middle}", check=True)
    resumed = newest(base.outputs, "finetune")
    assert json.loads((resumed / "manifest.json").read_text())["resumed_from"] == str(middle)
    a = weights(Path(full_run["run_dir"]) / "checkpoints" / "last.ckpt")
    b = weights(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


ALLOWED = (
    "give a pretrain or finetune run directory, or a Hugging Face model directory "
    "(config.json, weights, tokenizer)"
)


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(base: SimpleNamespace, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from quark.data.pairs import read_pairs
    from quark.data.tokenizer import save_hf_tokenizer, train_tokenizer
    from quark.steps.finetune import SPLITS_ALLOWED
    from quark.training.sft import encode_pairs, load_chat_tokenizer

    corrupt = tmp_path / "corrupt_run"
    shutil.copytree(base.pretrain, corrupt)
    (corrupt / "hf" / "config.json").write_text("{}")
    empty = tmp_path / "empty"
    empty.mkdir()
    big = tmp_path / "big_tokenizer"
    spec = SimpleNamespace(
        vocab_size=700,
        min_frequency=1,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
    )
    save_hf_tokenizer(train_tokenizer((f"word{i} " * 3 for i in range(2000)), spec), big, spec, 64)
    step = OmegaConf.load(CONF / "step" / "finetune.yaml")
    tokenizer, _ = load_chat_tokenizer(base.pretrain / "hf", step.chat_template, step.stop_token)
    records = read_pairs(
        base.pairs / "train.jsonl",
        key="step.data_dir",
        allowed=SPLITS_ALLOWED,
        purpose="supervised fine-tuning",
    )
    pairs = encode_pairs(tokenizer, records, None)
    lengths = [len(e.input_ids) for e in pairs]
    longest = max(lengths)
    with_pairs = f"step.data_dir={base.pairs}"
    cases = [
        (
            [with_pairs, "step.init_from=/no/such/dir"],
            f"step.init_from: /no/such/dir does not exist; {ALLOWED}",
        ),
        (
            [with_pairs, "experiment_name=other"],
            f"step.init_from: no completed pretrain run in experiment 'other' under {base.outputs}; "
            f"make one with: python launch.py pipeline=quickstart, or {ALLOWED}",
        ),
        (
            [with_pairs, f"step.init_from={base.sft}"],
            f"step.init_from: {base.sft} is a data run with no hf/ model; {ALLOWED}",
        ),
        (
            [with_pairs, f"step.init_from={empty}"],
            f"step.init_from: {empty} is not a model (no config.json and weights); {ALLOWED}",
        ),
        (
            [with_pairs, f"step.init_from={corrupt}"],
            f"step.init_from: {corrupt.resolve()}/hf/config.json: sha256 does not match the "
            "manifest (changed after "
            "the run completed); rerun the step that made it",
        ),
        (
            [f"step.data_dir={base.prefs}"],
            f"step.data_dir: {base.prefs} holds no prompt/response splits (train.jsonl, val.jsonl); "
            "give a data run of data=arithmetic_sft, or a directory of jsonl records with prompt "
            "and response fields",
        ),
        (
            ["experiment_name=other", f"step.init_from={base.pretrain}"],
            "step.data_dir: no completed data run of prompt/response pairs in experiment 'other' "
            f"under {base.outputs}; make one with: python launch.py step=data data=arithmetic_sft, "
            "or give a directory holding train.jsonl and val.jsonl of prompt/response records",
        ),
        (
            [with_pairs, "step.seq_len=8"],
            f"step.seq_len: 8 is shorter than example {lengths.index(longest) + 1} of train.jsonl "
            f"({longest} tokens); allowed: >= {longest}",
        ),
        (
            [with_pairs, f"step.tokenizer={big}"],
            f"step.tokenizer: the tokenizer in {big} has 700 tokens, more than the model's 600 "
            f"embeddings in {base.pretrain / 'hf'}; use the tokenizer the model was trained with "
            "(null takes the model directory's own)",
        ),
        (
            [with_pairs, "peft=lora", "peft.target_modules=[q_proj,qkv]"],
            "peft.target_modules: qkv not found in the model; the model's linear modules are: "
            "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj",
        ),
        (
            [with_pairs, "peft=lora", "trainer=fsdp", "trainer.accelerator=cpu"],
            "trainer.strategy: 'fsdp' is not built for LoRA fine-tuning; with peft=lora use "
            "trainer=cpu, gpu or ddp",
        ),
    ]
    for overrides, message in cases:
        done = base.launch(*FAST, *overrides)
        assert done.returncode == 2, (overrides, done.stderr)
        assert done.stderr.strip().splitlines()[-1] == f"error: {message}", overrides
