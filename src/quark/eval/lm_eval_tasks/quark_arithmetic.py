"""The dataset of the quark_arithmetic lm-eval task: the JSONL that step=evaluate wrote, whose
path lm-eval passes in with the task's metadata (TaskManager(metadata=...))."""

from __future__ import annotations

import json
from typing import Any

PATH_KEY = "quark_arithmetic_jsonl"


def dataset(**metadata: Any) -> Any:
    """A DatasetDict with the records of the JSONL as its `test` split."""
    import datasets

    path = metadata.get(PATH_KEY)
    if not path:
        raise ValueError(
            "quark_arithmetic reads the questions step=evaluate writes: run it with "
            "python launch.py step=evaluate step.lm_eval.tasks=[quark_arithmetic]"
        )
    with open(path) as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})
