"""quark.lineage.models: the model directory of any run or path, checked one way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quark.core.errors import ConfigError
from quark.lineage.models import find_model, has_chat_template, locate_model, training_run

from .conftest import MakeRun, cfg_for, hf_files

KEY, ALLOWED = "step.model_dir", "give a model"


def test_a_training_run_is_its_hf_directory(make_run: MakeRun) -> None:
    run = make_run("finetune", hf_files(vocab=77, chat=True))
    model = locate_model(run, KEY, ALLOWED)
    assert (model.source, model.directory, model.step) == (run, run / "hf", "finetune")
    assert model.config["vocab_size"] == 77 and model.positions == 64
    assert model.export is None and model.in_torch
    assert has_chat_template(model.directory)
    assert training_run(model) == run


def test_an_optimize_run_is_its_export_and_names_its_origin(make_run: MakeRun) -> None:
    trained = make_run("pretrain", hf_files())
    files = {
        "exports/onnx_int8/model.onnx": "graph",
        "exports/onnx_int8/config.json": json.dumps({"vocab_size": 50}),
        "exports/onnx_int8/tokenizer.json": "{}",
        "exports/onnx_int8/validation.json": json.dumps({"precision": "int8"}),
    }
    export = make_run("optimize", files, inputs={"model": trained})
    model = locate_model(export, KEY, ALLOWED, exports=("onnx_int8", "onnx"))
    assert model.directory == export / "exports" / "onnx_int8"
    assert (model.export, model.precision, model.origin) == ("onnx_int8", "int8", trained / "hf")
    assert not model.in_torch
    assert training_run(model) == trained
    with pytest.raises(ConfigError, match="optimize run of export=onnx_int8; this step runs no"):
        locate_model(export, KEY, ALLOWED)  # a step that takes Hugging Face models only


def test_a_plain_directory_is_itself(tmp_path: Path, make_run: MakeRun) -> None:
    run = make_run("pretrain", hf_files())
    plain = tmp_path / "plain"
    (run / "hf").rename(plain)
    model = locate_model(plain, KEY, ALLOWED)
    assert (model.source, model.directory, model.step) == (plain, plain, None)
    assert training_run(model) is None


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("missing", "does not exist"),
        ("file", "is not a directory"),
        ("no_weights", "is not a model (no config.json and weights)"),
        ("config_not_json", "config.json is unreadable"),
        ("config_not_lm", "is not a language model's config"),
        ("tokenizer_not_json", "tokenizer.json is unreadable"),
        ("no_tokenizer", "has no tokenizer"),
    ],
)
def test_a_damaged_model_directory_is_one_clear_error(
    tmp_path: Path, damage: str, words: str
) -> None:
    directory = tmp_path / "model"
    directory.mkdir()
    for name, text in hf_files().items():
        (directory / Path(name).name).write_text(text)
    if damage == "missing":
        directory = tmp_path / "nowhere"
    elif damage == "file":
        directory = directory / "config.json"
    elif damage == "no_weights":
        (directory / "model.safetensors").unlink()
    elif damage == "config_not_json":
        (directory / "config.json").write_text("{truncated")
    elif damage == "config_not_lm":
        (directory / "config.json").write_text("{}")
    elif damage == "tokenizer_not_json":
        (directory / "tokenizer.json").write_text("not json")
    else:
        (directory / "tokenizer.json").unlink()
        (directory / "tokenizer_config.json").unlink()
    with pytest.raises(ConfigError) as caught:
        locate_model(directory, KEY, ALLOWED)
    assert caught.value.key == KEY
    assert words in str(caught.value)


def test_a_run_without_a_model_is_refused(make_run: MakeRun) -> None:
    data = make_run("data", {"shards/index.json": "{}"})
    with pytest.raises(ConfigError, match="is a data run with no hf/ model"):
        locate_model(data, KEY, ALLOWED)


def test_find_model_takes_the_newest_finetune_before_pretrain_and_a_handed_export(
    make_run: MakeRun, tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    cfg = cfg_for(outputs, model_dir=None)
    with pytest.raises(ConfigError, match="no completed align, finetune or pretrain run"):
        find_model(cfg, KEY, ALLOWED)
    finetune = make_run("finetune", hf_files())
    make_run("pretrain", hf_files())  # newer, but finetune comes first
    assert find_model(cfg, KEY, ALLOWED).source == finetune
    export = make_run(
        "optimize",
        {"exports/onnx/model.onnx": "g", "exports/onnx/config.json": json.dumps({"vocab_size": 5}),
         "exports/onnx/tokenizer.json": "{}"},
        inputs={"model": finetune},
    )  # fmt: skip
    handed = cfg_for(outputs, model_dir=None, inputs={"optimize": str(export)})
    assert find_model(handed, KEY, ALLOWED, exports=("onnx",)).source == export
    # a step that runs no exports passes the handed-over export by
    assert find_model(handed, KEY, ALLOWED).source == finetune
