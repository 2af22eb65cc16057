"""lm-eval-harness tasks against a Quark model, offline.

The model goes in as lm-eval's own HFLM over its Hugging Face directory (a run's hf/ export),
so any lm-eval task runs as lm-eval runs it, with the model's chat template applied when it
has one. Quark ships `quark_arithmetic` (lm_eval_tasks/): the arithmetic questions this step
writes to a JSONL, so one task always runs without a download. Any other task name is
accepted when its data is on this machine; nothing is ever fetched (the hub is set offline).
lm_eval is imported here only, when tasks are asked for: it takes seconds to import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from quark.core.errors import ConfigError
from quark.data.pairs import Pair

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
ARITHMETIC = "quark_arithmetic"
ARITHMETIC_PATH_KEY = "quark_arithmetic_jsonl"  # lm_eval_tasks/quark_arithmetic.py reads it
KEY = "step.lm_eval.tasks"
# numbers in lm-eval's results that are no score of the model
NOT_SCORES = ("sample_len", "sample_count")


def go_offline() -> None:
    """Never reach the hub from this process: datasets and huggingface_hub read these when
    they are imported, and transformers only ever loads local directories here."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def import_lm_eval() -> ModuleType:
    """lm_eval, or a one-line error with the install command."""
    go_offline()
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(
            KEY,
            "lm-eval tasks need the Python package lm-eval, which is not installed",
            "install the eval extra: pip install 'quark[eval]'",
        ) from None
    return lm_eval


def task_manager(names: Sequence[str], include_path: Path | None, metadata: dict[str, Any]) -> Any:
    """An lm-eval TaskManager that knows every task in `names`: Quark's and `include_path`'s
    tasks, and lm-eval's own only when a name needs them (indexing those takes seconds).

    Raises:
        ConfigError: a task name none of them has.
    """
    import_lm_eval()
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR), *([str(include_path)] if include_path else [])]
    manager = TaskManager(include_path=paths, include_defaults=False, metadata=metadata)
    if any(name not in manager.all_tasks for name in names):
        manager = TaskManager(include_path=paths, include_defaults=True, metadata=metadata)
    for name in names:
        if name not in manager.all_tasks:
            raise ConfigError(
                KEY,
                f"'{name}' is not an lm-eval task",
                f"give {ARITHMETIC} (shipped with Quark), a task of lm-eval's own list "
                "(lm-eval ls tasks) whose data is on this machine, or one of your own in "
                "step.lm_eval.include_path",
            )
    return manager


def load_tasks(manager: Any, names: Sequence[str]) -> None:
    """Build each task once, so a task whose data is not here fails now, as bad input."""
    for name in names:
        try:
            manager.load([name])
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ConfigError(
                KEY,
                f"lm-eval task '{name}' could not load its data offline ({type(exc).__name__}: "
                f"{detail})",
                "download the task's dataset into the Hugging Face cache first, or give a task "
                "whose data is local",
            ) from None


def write_arithmetic_set(path: Path, pairs: Sequence[Pair], stop_text: str, chat: bool) -> None:
    """The quark_arithmetic questions: each prompt, and as target the answer the model should
    continue with (after a chat template's generation prompt: the answer and the end-of-message
    text; after a plain prompt: a space and the answer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for pair in pairs:
            target = pair.response + stop_text if chat else " " + pair.response
            record = {"prompt": pair.prompt, "response": pair.response, "target": target}
            out.write(json.dumps(record))
            out.write("\n")


def run_tasks(
    model_dir: Path,
    names: Sequence[str],
    manager: Any,
    *,
    chat: bool,
    limit: int | None,
    num_fewshot: int | None,
    batch_size: int,
    device: str,
    seed: int,
) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """Run the tasks on the model in `model_dir` with lm-eval's HFLM: the metrics as
    `lm_eval/<task>/<metric>`, the better side of each ('lower' or 'higher'), and lm-eval's
    results table (JSON-safe) for the record."""
    import_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), device=device, batch_size=batch_size, dtype="float32")
    results = simple_evaluate(
        model=lm,
        tasks=list(names),
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        apply_chat_template=chat,
        log_samples=False,
        bootstrap_iters=0,  # no stderr resampling: seconds saved, the means are exact anyway
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if results is None:  # a non-zero rank of a distributed lm-eval run: not how Quark runs it
        return {}, {}, {}
    metrics: dict[str, float] = {}
    directions: dict[str, str] = {}
    for task, values in results["results"].items():
        better = results.get("higher_is_better", {}).get(task, {})
        for key, value in values.items():
            metric, _, kind = key.partition(",")
            if metric in NOT_SCORES or "stderr" in metric or not _number(value):
                continue
            name = f"lm_eval/{task}/{metric}" + ("" if kind in ("", "none") else f"_{kind}")
            metrics[name] = float(value)
            if metric in better and better[metric] is not None:
                directions[name] = "higher" if better[metric] else "lower"
    table = {
        "results": results["results"],
        "n-samples": results.get("n-samples", {}),
        "config": {"limit": limit, "num_fewshot": num_fewshot, "apply_chat_template": chat},
    }
    return metrics, directions, json.loads(json.dumps(table, default=str))


def quiet_lm_eval() -> None:
    """lm-eval's per-stage info lines and progress bars would fill Hydra's log; its warnings
    stay, but for the one every task with its own dataset loader repeats. Call it before
    anything imports tqdm, which reads TQDM_DISABLE once."""
    import logging

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    logging.getLogger("lm_eval.api.task").setLevel(logging.ERROR)
    os.environ["TQDM_DISABLE"] = "1"  # read by tqdm when each bar starts


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
