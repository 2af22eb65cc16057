"""MFU of pretraining on a GPU: llama_124m in bf16-mixed (issue 4 target: >= 50 % on an H100),
and tokens/s of each single-device strategy on the same model, data and batch.

MFU is Quark's own `perf/mfu` log (the planner's 6N + attention FLOPs per token times tokens/s,
over the GPU's dense bf16 peak from quark.planning.hardware), taken over windows after the
first, so compilation and warm-up are left out. Needs CUDA; prints one line per layout.

    .venv/bin/python bench/pretrain_mfu_gpu.py [--steps 60] [--micro-batch 16] [--compile]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch(outputs: Path, *overrides: str) -> dict:
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    subprocess.run(
        [sys.executable, "launch.py", *overrides, "experiment_name=bench"],
        cwd=REPO,
        env=env,
        check=True,
    )
    step = next(o.split("=", 1)[1] for o in overrides if o.startswith("step="))
    newest = sorted((outputs / "bench" / step).glob("*/manifest.json"))[-1]
    return json.loads(newest.read_text())


def steady(run_dir: Path, key: str) -> float:
    with open(run_dir / "logs" / "metrics.csv") as handle:
        values = [float(r[key]) for r in csv.DictReader(handle) if r.get(key)]
    kept = values[1:] or values
    return sum(kept) / len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("needs CUDA")
    layouts = {
        "single": ["trainer=gpu"],
        "deepspeed_zero2": ["trainer=deepspeed_zero2", "trainer.devices=1"],
        "fsdp": ["trainer=fsdp", "trainer.devices=1"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        data = launch(outputs, "step=data")
        for name, layout in layouts.items():
            manifest = launch(
                outputs,
                "step=pretrain",
                "model=llama_124m",
                *layout,
                "trainer.precision=bf16-mixed",
                f"trainer.micro_batch_size={args.micro_batch}",
                f"trainer.compile={str(args.compile).lower()}",
                "trainer.log_every_n_steps=10",
                f"step.data_dir={data['run_dir']}",
                f"step.seq_len={args.seq_len}",
                f"step.max_steps={args.steps}",
                f"step.val_every_n_steps={args.steps}",
                f"step.checkpoint_every_n_steps={args.steps}",
            )
            run_dir = Path(manifest["run_dir"])
            print(
                f"{name}: {steady(run_dir, 'perf/tokens_per_s'):.0f} tokens/s, "
                f"MFU {100 * steady(run_dir, 'perf/mfu'):.1f} % "
                f"({torch.cuda.get_device_name(0)}, llama_124m, bf16-mixed, "
                f"micro-batch {args.micro_batch}, seq {args.seq_len})"
            )


if __name__ == "__main__":
    main()
