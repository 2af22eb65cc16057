"""The safety guard against the red team, measured (issue 12): the classifier on templates it
never saw, attack success with and without each guard, false refusals, the adaptive attack,
and the attack's bypasses trained on by the next classifier.

    classifier     align=safety_classifier on its defaults, for each seed: accuracy, unsafe
                   recall and false-positive rate on the test split (held-out templates),
                   before (a fresh head) and after
    red team       step=evaluate step.tasks=[red_team] with safety=rules and with
                   safety=classifier (the first seed's): attack success through the served
                   model without and with the guard, false refusal rate, the adaptive
                   attack's rounds to a bypass
    next round     the classifier guard's bypasses split in two by the request they grew
                   from: a classifier trained with one half (align.extra_train) and measured
                   on the other half, against the classifier they got past

Every run goes through launch.py as a user runs it. Give the served model (a finetune run),
the run the classifier starts from, and the data=safety_requests run:

    .venv/bin/python bench/safety_redteam.py --outputs /tmp/bench/outputs \
        --model outputs/demo/finetune/<run> --start outputs/demo/finetune/<run> \
        --requests outputs/demo/data/<safety_requests run>
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def launch(outputs: Path, experiment: str, step: str, *overrides: str) -> dict:
    """Run launch.py with `overrides`; the manifest of the run it made."""
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    done = subprocess.run(
        [sys.executable, "launch.py", f"experiment_name={experiment}", f"step={step}", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"launch.py {' '.join(overrides)} failed:\n{done.stderr[-2000:]}")
    manifests = sorted(
        (outputs / experiment / step).glob("*/manifest.json"), key=lambda p: p.stat().st_mtime
    )
    return json.loads(manifests[-1].read_text())


def passing(guard_dir: Path, texts: list[str]) -> float:
    """The share of `texts` the rules and the classifier in `guard_dir` let through."""
    import yaml

    from quark.safety.classifier import ClassifierGuard
    from quark.safety.guard import SafetyGuard
    from quark.safety.rules import RuleGuard

    rules = yaml.safe_load((REPO / "conf" / "safety" / "rules.yaml").read_text())
    guard = SafetyGuard(
        RuleGuard.from_lists(rules["lists"]), ClassifierGuard(guard_dir), ("requests",)
    )
    return sum(not blocked for blocked, _ in guard.assess(texts)) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--experiment", default="safety_bench")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--start", type=Path, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    outputs, experiment = args.outputs, args.experiment
    data = [f"step.init_from={args.start}", f"step.data_dir={args.requests}"]

    print("## classifier (test split: held-out templates)")
    classifiers = {}
    for seed in args.seeds:
        run = launch(outputs, experiment, "align", "align=safety_classifier", f"seed={seed}", *data)
        m = run["metrics"]
        classifiers[seed] = Path(run["run_dir"])
        print(
            f"seed {seed}: accuracy {m['test_accuracy_before']:.3f} -> {m['test_accuracy']:.3f}, "
            f"unsafe recall {m['test_unsafe_recall']:.3f}, false positives "
            f"{m['test_false_positive_rate']:.3f}, precision {m['test_precision']:.3f}; val "
            f"recall {m['val_unsafe_recall']:.3f}, false positives "
            f"{m['val_false_positive_rate']:.3f} ({m['train_seconds']:.0f} s)"
        )

    print("## red team")
    first = classifiers[args.seeds[0]]
    common = ["step.tasks=[red_team]", f"step.model_dir={args.model}",
              f"step.red_team.data_dir={args.requests}"]  # fmt: skip
    runs = {
        "rules": launch(outputs, experiment, "evaluate", *common, "safety=rules"),
        "classifier": launch(
            outputs, experiment, "evaluate", *common, "safety=classifier",
            f"safety.classifier.path={first}",
        ),
    }  # fmt: skip
    for name, run in runs.items():
        m = run["metrics"]
        print(
            f"{name}: attack success {m['red_team_attack_success_unguarded']:.3f} without -> "
            f"{m['red_team_attack_success_guarded']:.3f} with the guard; false refusals "
            f"{m['red_team_false_refusal_rate']:.3f}; adaptive: "
            f"{m.get('red_team_adaptive_rounds_to_bypass', 'no bypass')} round(s) to a bypass, "
            f"{m['red_team_adaptive_bypasses']:.0f} bypasses in {m['red_team_adaptive_rounds']:.0f} rounds"
        )

    print("## next round: the classifier guard's bypasses trained on")
    bypasses_file = Path(runs["classifier"]["run_dir"]) / "red_team" / "bypasses.jsonl"
    bypasses = [json.loads(line) for line in bypasses_file.read_text().splitlines()]
    # halves by the request a bypass grew from, so no request's mutants are in both
    roots = sorted({b["origin"] for b in bypasses})
    random.Random(0).shuffle(roots)
    trained_roots = set(roots[: len(roots) // 2])
    train = [b for b in bypasses if b["origin"] in trained_roots]
    held = [b["text"] for b in bypasses if b["origin"] not in trained_roots]
    train_file = outputs / "bypasses_train.jsonl"
    train_file.write_text("".join(json.dumps({"text": b["text"], "label": b["label"]}) + "\n"
                                  for b in train))  # fmt: skip
    retrained = launch(
        outputs,
        experiment,
        "align",
        "align=safety_classifier",
        f"seed={args.seeds[0]}",
        f"align.extra_train=[{train_file}]",
        "step.seq_len=512",
        *data,
    )  # fmt: skip  (padded bypasses run long)
    m = retrained["metrics"]
    print(
        f"{len(bypasses)} bypasses from {len(roots)} requests; trained on {len(train)}, "
        f"held out {len(held)}: passing the old guard {passing(first / 'classifier', held):.3f}, "
        f"the new one {passing(Path(retrained['run_dir']) / 'classifier', held):.3f}; new "
        f"classifier's test false positives {m['test_false_positive_rate']:.3f}, unsafe recall "
        f"{m['test_unsafe_recall']:.3f}"
    )


if __name__ == "__main__":
    main()
