"""Does each align option learn? Each figure is measured against the model it started from, in
the same run: held-out items, before and after (issue 12).

    dpo            implicit reward accuracy on the validation pairs (0 at the start, where
                   policy and reference are one model) and exact match of the greedy answers
                   against chosen, before and after (target: not lower by more than 1 point)
    reward_model   pairwise accuracy on the validation pairs, before (a random head) and after
                   (target: well above 50 %)
    grpo           exact match of the greedy answers on the validation prompts, before and
                   after, for each seed (target: a gain for two seeds, from an SFT model under
                   90 %)

Every option runs on its defaults (conf/step/align.yaml, conf/align/*.yaml). Give it the runs
to start from (a finetune run for DPO and the reward model, one under 90 %
for GRPO) and the data runs; each option runs as a user runs it, through launch.py:

    .venv/bin/python bench/align_learning.py --outputs /tmp/exp/outputs \
        --dpo-from outputs/demo/finetune/<run> --prefs outputs/demo/data/<prefs run> \
        --grpo-from outputs/demo/finetune/<run> --prompts outputs/demo/data/<sft run>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch(outputs: Path, experiment: str, *overrides: str) -> dict:
    """Run launch.py with `overrides`; the manifest of the run it made."""
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    done = subprocess.run(
        [sys.executable, "launch.py", f"experiment_name={experiment}", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"launch.py {' '.join(overrides)} failed:\n{done.stderr[-2000:]}")
    manifests = sorted(
        (outputs / experiment / "align").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime
    )
    return json.loads(manifests[-1].read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--experiment", default="align_bench")
    parser.add_argument("--dpo-from", type=Path, required=True)
    parser.add_argument("--prefs", type=Path, required=True)
    parser.add_argument("--grpo-from", type=Path, required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    rows = []
    preference = ["step=align", f"step.init_from={args.dpo_from}", f"step.data_dir={args.prefs}"]
    dpo = launch(args.outputs, args.experiment, *preference)["metrics"]
    rows.append(("dpo", "-", "exact match", dpo["val_accuracy_before"], dpo["val_accuracy"]))
    rows.append(("dpo", "-", "implicit reward accuracy", 0.0, dpo["val_reward_accuracy"]))
    reward = launch(args.outputs, args.experiment, *preference, "align=reward_model")["metrics"]
    rows.append(
        (
            "reward_model",
            "-",
            "pairwise accuracy",
            reward["val_accuracy_before"],
            reward["val_accuracy"],
        )
    )
    for seed in args.seeds:
        grpo = launch(
            args.outputs,
            args.experiment,
            "step=align",
            "align=grpo",
            f"seed={seed}",
            f"step.init_from={args.grpo_from}",
            f"step.data_dir={args.prompts}",
        )["metrics"]
        rows.append(
            ("grpo", str(seed), "exact match", grpo["val_accuracy_before"], grpo["val_accuracy"])
        )
    print("| option | seed | measure (held-out) | before | after | change |")
    print("|---|---|---|---|---|---|")
    for option, seed, measure, before, after in rows:
        print(
            f"| {option} | {seed} | {measure} | {before:.3f} | {after:.3f} | {after - before:+.3f} |"
        )


if __name__ == "__main__":
    main()
