"""Framework overhead: Quark's pretrain tokens/s against a plain PyTorch loop, in one session.

Both train the same Llama (built by quark.models.llama.build_llama from the same model config
and seed) on the same token windows of the same data run, with the same micro-batch, sequence
length, precision, AdamW parameter groups, warmup-cosine schedule and gradient clipping. Quark
runs as a user runs it (`launch.py step=pretrain` in a subprocess); the plain loop is the
textbook `forward, backward, clip, step, zero_grad`. Runs alternate so machine drift is shared.

Two figures per run:
- steady state: tokens/s over windows of `--window` optimizer steps after the first window
  (Quark's own perf/tokens_per_s log; the loop timed the same way);
- whole fit: all tokens over the whole of `trainer.fit` (Quark: the manifest's tokens_per_s,
  which includes Lightning's set-up and the final checkpoint) against the whole loop.

Target (issue 4): steady-state ratio >= 0.97 on CPU.

    .venv/bin/python bench/pretrain_overhead.py [--steps 60] [--rounds 2] [--model llama_tiny]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def launch(outputs: Path, *overrides: str) -> None:
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    subprocess.run(
        [sys.executable, "launch.py", *overrides],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )


def newest_manifest(outputs: Path, step: str) -> dict:
    found = sorted((outputs / "bench" / step).glob("*/manifest.json"))
    return json.loads(found[-1].read_text())


def steady_rate(rates: list[float]) -> float:
    """Tokens/s over equal-token windows (their harmonic mean), the first window left out."""
    kept = rates[1:] or rates
    return len(kept) / sum(1.0 / r for r in kept)


def quark_run(outputs: Path, common: list[str]) -> tuple[float, float]:
    launch(outputs, "step=pretrain", *common)
    manifest = newest_manifest(outputs, "pretrain")
    with open(Path(manifest["run_dir"]) / "logs" / "metrics.csv") as handle:
        rates = [
            float(r["perf/tokens_per_s"])
            for r in csv.DictReader(handle)
            if r.get("perf/tokens_per_s")
        ]
    return steady_rate(rates), float(manifest["metrics"]["tokens_per_s"])


def plain_run(
    data_dir: Path, model_name: str, steps: int, window: int, micro: int, seq: int
) -> tuple[float, float]:
    """The same training as a plain PyTorch loop; (steady tokens/s, whole-loop tokens/s)."""
    import math

    import torch
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from quark.models.llama import build_llama
    from quark.training.shards import ResumableSampler, TokenWindows

    torch.manual_seed(1234)
    model_cfg = OmegaConf.to_container(
        OmegaConf.load(REPO / "conf" / "model" / f"{model_name}.yaml")
    )
    assert isinstance(model_cfg, dict)
    model = build_llama(**{k: v for k, v in model_cfg.items() if k not in ("_target_", "name")})
    windows = TokenWindows(data_dir / "shards", "train", seq)
    loader = iter(
        DataLoader(windows, batch_size=micro, sampler=ResumableSampler(len(windows), 1234))
    )
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-3,
        betas=(0.9, 0.95),
    )
    warmup = 20

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    rates: list[float] = []
    started = window_start = time.perf_counter()
    for step in range(1, steps + 1):
        batch = next(loader)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % window == 0:
            now = time.perf_counter()
            rates.append(window * micro * seq / (now - window_start))
            window_start = now
    whole = steps * micro * seq / (time.perf_counter() - started)
    return steady_rate(rates), whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="llama_tiny")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        launch(outputs, "step=data", "experiment_name=bench")
        data_dir = Path(newest_manifest(outputs, "data")["run_dir"])
        common = [
            "experiment_name=bench",
            f"model={args.model}",
            f"step.data_dir={data_dir}",
            f"step.max_steps={args.steps}",
            f"step.seq_len={args.seq_len}",
            f"trainer.micro_batch_size={args.micro_batch}",
            f"trainer.log_every_n_steps={args.window}",
            # validation and step checkpoints only after the last timed window
            f"step.val_every_n_steps={args.steps}",
            f"step.checkpoint_every_n_steps={args.steps}",
        ]
        results: dict[str, list[tuple[float, float]]] = {"quark": [], "plain": []}
        for _ in range(args.rounds):
            results["quark"].append(quark_run(outputs, common))
            results["plain"].append(
                plain_run(
                    data_dir, args.model, args.steps, args.window, args.micro_batch, args.seq_len
                )
            )
    quark_steady = statistics.median(r[0] for r in results["quark"])
    plain_steady = statistics.median(r[0] for r in results["plain"])
    quark_whole = statistics.median(r[1] for r in results["quark"])
    plain_whole = statistics.median(r[1] for r in results["plain"])
    print(
        f"model {args.model}, micro-batch {args.micro_batch}, seq {args.seq_len}, fp32, {args.steps} steps, {args.rounds} alternating rounds"
    )
    for name, runs in results.items():
        print(
            f"{name:>6}: steady "
            + ", ".join(f"{s:.0f}" for s, _ in runs)
            + " tokens/s; whole fit "
            + ", ".join(f"{w:.0f}" for _, w in runs)
        )
    print(f"steady-state ratio (quark / plain): {quark_steady / plain_steady:.3f} (target >= 0.97)")
    print(f"whole-fit ratio (quark / plain): {quark_whole / plain_whole:.3f}")


if __name__ == "__main__":
    main()
