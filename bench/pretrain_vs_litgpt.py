"""Quark's pretrain against LitGPT's, as a user compares them: the same Llama shape, raw text,
tokenizer, batch, schedule and steps, one session, runs alternating.

Issue 16's comparison: hidden 256, 4 layers, 4 heads (no GQA), SwiGLU 1024, vocab 8192 (8.4M
parameters), batch 8 x 256 tokens, fp32, AdamW lr 3e-4 (betas 0.9/0.95, weight decay 0.1),
6 warmup steps then cosine to 3e-5, gradient clipping 1.0, on this Python's standard library.

- raw text: the standard library's source files written out as .txt, the same files for both;
- Quark: `launch.py step=data data=text_files` on them (cleaning, dedup, a tokenizer trained
  on them, packing), then `launch.py step=pretrain` (eager, and `trainer.compile=true`);
- LitGPT (0.5.13, in its own virtual environment, `--litgpt-python`): `litgpt pretrain` with
  `--data TextFiles` on the same .txt files and Quark's tokenizer (LitGPT needs a trained one),
  compiled as it always is, and again with TORCHDYNAMO_DISABLE=1 (its eager);
- a plain PyTorch loop on LitGPT's model (eager and compiled), on Quark's training windows.

Figures: steady tokens/s (steps 11..N); each side's train loss on its own batches (mean of the
last 10 steps); every final model's loss on the same windows (both use Quark's tokenizer, so
token windows are comparable): up to 256 windows of the documents Quark's data step holds out
for validation (held out of LitGPT's text too), and 256 windows of the training split; and wall
time from raw text to the trained model (Quark: its data step plus pretrain, and the same in one
command, pipeline=quickstart; LitGPT: `litgpt pretrain`, whose data preparation is inside it).
Ratios are Quark over LitGPT's default (compiled). Round r trains with seed 42 + r on both sides
(LitGPT's TextFiles stream ignores it: its data order is the same each round). Each run
compiles from nothing (its own TORCHINDUCTOR_CACHE_DIR), as a new user's first run does;
`--warm-compile-cache` shares the machine's cache instead, as a second run of the same shapes.

    make litgpt-venv                    # once: LitGPT 0.5.13 in bench/.venv-litgpt (CPU torch)
    .venv/bin/python bench/pretrain_vs_litgpt.py [--steps 60] [--rounds 2] [--init scaled]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

SHAPE = {"vocab_size": 8192, "hidden_size": 256, "num_layers": 4, "num_heads": 4,
         "num_kv_heads": 4, "intermediate_size": 1024}  # fmt: skip
SCHEDULE = {"lr": 3e-4, "min_lr_ratio": 0.1, "warmup_steps": 6, "weight_decay": 0.1,
            "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "micro_batch_size": 8}  # fmt: skip
SEQ_LEN = 256
# every model is scored on the same windows: all of Quark's val split (its documents are held out
# of both frameworks' training text), at most this many
VAL_WINDOWS = 256
WARM_STEPS = 10  # steady state is steps 11..N
FIRST_SEED = 42  # round r trains with seed FIRST_SEED + r (model init and data order), both sides


def steady_tokens_per_s(seconds_after: dict[int, float], steps: int, tokens_per_step: int) -> float:
    """Tokens/s over steps WARM_STEPS + 1..steps, from the elapsed seconds after each step
    (1-based): compilation and first allocations are behind. Used by both sides of the bench
    (bench/litgpt_side.py imports it: this module imports nothing outside the standard library
    at its top)."""
    elapsed = seconds_after[steps] - seconds_after[WARM_STEPS]
    return (steps - WARM_STEPS) * tokens_per_step / elapsed


def timed_plain_loop(
    parameters: list[Any],
    optimizer: Any,
    windows: Any,
    steps: int,
    schedule: dict[str, Any],
    lr_at: Callable[[int], float],
    loss_of: Callable[[Any], Any],
) -> dict[str, float]:
    """The plain PyTorch loop both models are timed in: each step sets the learning rate
    `lr_at(step)`, takes the next micro-batch of token `windows`, and runs `loss_of(batch)`,
    backward, gradient clipping, the optimizer step and zero_grad. Used by both sides of the
    bench, as steady_tokens_per_s is (torch is imported here, not at the module's top)."""
    import torch

    micro = schedule["micro_batch_size"]
    stamps, losses = [], []
    started = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = loss_of(windows[step * micro : (step + 1) * micro])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, schedule["grad_clip"])
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        stamps.append(time.perf_counter() - started)
    tokens_per_step = micro * (windows.shape[1] - 1)
    return {
        "tokens_per_s": steady_tokens_per_s(
            dict(enumerate(stamps, start=1)), steps, tokens_per_step
        ),
        "train_loss_last10": statistics.fmean(losses[-10:]),
        "train_loss": losses[-1],
        "seconds": stamps[-1],
        "nan": any(math.isnan(x) for x in losses),
    }


def litgpt_config() -> dict[str, Any]:
    """LitGPT's Config of the same Llama."""
    return {
        "name": "quark-llama-8m",
        "block_size": SEQ_LEN,
        "vocab_size": SHAPE["vocab_size"],
        "padded_vocab_size": SHAPE["vocab_size"],
        "n_layer": SHAPE["num_layers"],
        "n_head": SHAPE["num_heads"],
        "n_query_groups": SHAPE["num_kv_heads"],
        "n_embd": SHAPE["hidden_size"],
        "intermediate_size": SHAPE["intermediate_size"],
        "rotary_percentage": 1.0,
        "parallel_residual": False,
        "bias": False,
        "norm_class_name": "RMSNorm",
        "norm_eps": 1e-5,
        "mlp_class_name": "LLaMAMLP",
        "rope_base": 10000,
    }


# Where each timed run keeps torch.compile's caches: a new folder per run (a new user's first
# run compiles from nothing), or None to share the machine's (a second run of the same shapes).
FRESH_COMPILE_CACHES: Path | None = None


def timed(command: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> float:
    env = dict(env or {})
    if FRESH_COMPILE_CACHES is not None:
        FRESH_COMPILE_CACHES.mkdir(parents=True, exist_ok=True)
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(dir=FRESH_COMPILE_CACHES)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def write_raw_text(directory: Path) -> int:
    """The standard library's source files (as Quark's stdlib_code reads them) as .txt files."""
    from quark.data.sources import stdlib_files

    directory.mkdir(parents=True)
    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files()
    for path in files:
        name = str(path.relative_to(root)).replace("/", "__")
        shutil.copyfile(path, directory / f"{name}.txt")
    return len(files)


# ---------------------------------------------------------------- Quark


def quark_overrides(
    steps: int, init: str, seed: int | None, own_schedule: bool = False
) -> list[str]:
    """Quark's pretrain of the shape above; `seed` None keeps the configured one;
    `own_schedule`: Quark's default step.optim (lr 3e-3, 20 warmup steps) instead of the
    compared schedule."""
    schedule = [] if own_schedule else [
        f"step.optim.lr={SCHEDULE['lr']}",
        f"step.optim.weight_decay={SCHEDULE['weight_decay']}",
        f"step.optim.beta1={SCHEDULE['beta1']}",
        f"step.optim.beta2={SCHEDULE['beta2']}",
        f"step.optim.warmup_steps={SCHEDULE['warmup_steps']}",
        f"step.optim.min_lr_ratio={SCHEDULE['min_lr_ratio']}",
    ]  # fmt: skip
    return [
        "step=pretrain",
        *([f"seed={seed}"] if seed is not None else []),
        "model=llama_custom",
        "model.name=bench_8m",
        *(f"model.{k}={v}" for k, v in SHAPE.items()),
        "model.max_seq_len=512",
        f"model.init={init}",
        f"step.seq_len={SEQ_LEN}",
        f"step.max_steps={steps}",
        # one validation, at the end, on Quark's default step.val_samples (64 windows); LitGPT
        # validates 2 batches (16 windows) as a sanity check. The comparison's losses come from
        # scoring every final model on the same windows afterwards (quark_results)
        f"step.val_every_n_steps={steps}",
        f"step.checkpoint_every_n_steps={steps}",
        *schedule,
        f"step.grad_clip={SCHEDULE['grad_clip']}",
        f"trainer.micro_batch_size={SCHEDULE['micro_batch_size']}",
        "trainer.log_every_n_steps=1",
        "trainer.precision=32-true",
    ]


def quark_env(outputs: Path) -> dict[str, str]:
    return {"QUARK_OUTPUT_DIR": str(outputs)}


def newest_run(outputs: Path, step: str) -> Path:
    return sorted((outputs / "bench" / step).glob("*/manifest.json"))[-1].parent


def quark_data(outputs: Path, raw: Path) -> tuple[Path, float]:
    seconds = timed(
        [sys.executable, "launch.py", "step=data", "data=text_files", "experiment_name=bench",
         f"data.sources.0.paths=[{raw}/*.txt]"],
        quark_env(outputs),
    )  # fmt: skip
    return newest_run(outputs, "data"), seconds


def quark_pretrain(
    outputs: Path,
    data_run: Path,
    steps: int,
    init: str,
    compile: bool,
    seed: int,
    scored: dict[str, Path],
    own_schedule: bool = False,
) -> dict[str, float]:
    overrides = [*quark_overrides(steps, init, seed, own_schedule), f"step.data_dir={data_run}",
                 "experiment_name=bench", f"trainer.compile={str(compile).lower()}"]  # fmt: skip
    seconds = timed([sys.executable, "launch.py", *overrides], quark_env(outputs))
    return {**quark_results(newest_run(outputs, "pretrain"), scored), "seconds": seconds}


def quark_raw_text_to_model(
    outputs: Path, raw: Path, steps: int, init: str, scored: dict[str, Path]
) -> dict[str, float]:
    """Raw text to a trained model in one command, as a Quark user runs it: the quickstart
    pipeline (data, then pretrain, in one process) on the .txt files, eager. With the configured
    seed: `seed=` would reach the data stage too, and move documents between the splits."""
    overrides = [o for o in quark_overrides(steps, init, None) if o != "step=pretrain"]
    seconds = timed(
        [sys.executable, "launch.py", "pipeline=quickstart", "experiment_name=bench",
         "data=text_files", f"data.sources.0.paths=[{raw}/*.txt]", *overrides],
        quark_env(outputs),
    )  # fmt: skip
    return {**quark_results(newest_run(outputs, "pretrain"), scored), "seconds": seconds}


def quark_results(run: Path, scored: dict[str, Path]) -> dict[str, float]:
    """Steady tokens/s and the last 10 steps' loss from a pretrain run's metrics log; its export's
    loss on each of the `scored` windows (see quark_windows)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from quark.training.export import validation_loss

    rows = list(csv.DictReader((run / "logs" / "metrics.csv").open()))
    rates = [float(r["perf/tokens_per_s"]) for r in rows if r.get("perf/tokens_per_s")]
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    model = AutoModelForCausalLM.from_pretrained(run / "hf").eval()
    return {
        # windows of one step each; steps 11..N, equal tokens each: harmonic mean
        "tokens_per_s": len(rates[WARM_STEPS:]) / sum(1 / r for r in rates[WARM_STEPS:]),
        "train_loss_last10": statistics.fmean(losses[-10:]),
        **{
            key: validation_loss(model, torch.from_numpy(np.load(windows)).long().split(8))
            for key, windows in scored.items()
        },
    }


def quark_windows(data_run: Path, out: Path, steps: int) -> tuple[dict[str, Path], Path]:
    """What every final model is scored on, as .npy: `val_loss` on Quark's val windows (all of
    them, at most VAL_WINDOWS), `train_split_loss` on a fixed sample of VAL_WINDOWS training-split
    windows (in both frameworks' training text; each side's own last-10-steps loss is on
    different batches); and the plain loops' steps x batch training windows."""
    import numpy as np

    from quark.training.shards import TokenWindows

    val = TokenWindows(data_run / "shards", "val", SEQ_LEN)
    train = TokenWindows(data_run / "shards", "train", SEQ_LEN)
    count = steps * SCHEDULE["micro_batch_size"]
    np.save(out / "val.npy", np.stack([val[i].numpy() for i in range(min(len(val), VAL_WINDOWS))]))
    rng = np.random.default_rng(0)
    picks = rng.permutation(len(train))
    np.save(out / "train.npy", np.stack([train[int(i)].numpy() for i in picks[:count]]))
    held_in = picks[-VAL_WINDOWS:]  # not among the plain loops' windows
    np.save(out / "held_in.npy", np.stack([train[int(i)].numpy() for i in held_in]))
    return {"val_loss": out / "val.npy", "train_split_loss": out / "held_in.npy"}, out / "train.npy"


# ---------------------------------------------------------------- LitGPT


def quark_val_documents(raw: Path, data_run: Path) -> set[str]:
    """Names of the .txt files in `raw` whose documents `data_run` put in its val split: by the
    seeded hash of the document id, as quark.data.packing splits them, with the run's own seed
    and val_fraction."""
    from omegaconf import OmegaConf

    from quark.data.packing import split_of

    config = OmegaConf.load(data_run / "config.yaml")
    seed, fraction = int(config.seed), float(config.data.pack.val_fraction)
    return {
        path.name for path in raw.glob("*.txt")
        if split_of(f"0:{path}", fraction, seed) == "val"
    }  # fmt: skip


def litgpt_pretrain(
    python: Path,
    raw: Path,
    held_out: set[str],
    tokenizer: Path,
    out: Path,
    steps: int,
    compiled: bool,
    seed: int,
    scored: dict[str, Path],
    cached_host_memory: bool = False,
) -> dict[str, float]:
    """`cached_host_memory`: LitGPT with glibc's malloc set as Quark's trainer.cache_host_memory
    sets it (through glibc's environment variables), to show what that alone is worth."""
    import yaml

    micro = SCHEDULE["micro_batch_size"]
    # LitGPT writes its tokenized data next to the text and skips preparing it when it finds it:
    # each run gets its own copy (hard links), so each pays for its data preparation as a user
    # does. Quark's val documents (`held_out`, file names) are left out of it: every model is
    # scored on them, so neither side may train on them. TextFiles' own validation split is the
    # first file alone, too small for a batch here: a separate folder of those val documents
    # (LitGPT's validation is a sanity check only; the comparison scores every model on Quark's
    # val windows)
    text = out.parent / f"{out.name}-text"
    held = out.parent / f"{out.name}-val"
    text.mkdir()
    held.mkdir()
    for path in raw.glob("*.txt"):
        os.link(path, (held if path.name in held_out else text) / path.name)
    config = {
        "model_name": "quark-llama-8m",
        "model_config": litgpt_config(),
        "out_dir": str(out),
        "precision": "32-true",
        "data": {"class_path": "litgpt.data.TextFiles",
                 "init_args": {"train_data_path": str(text), "val_data_path": str(held),
                               "num_workers": 1, "seed": seed}},
        "train": {"save_interval": None, "log_interval": 1, "global_batch_size": micro,
                  "micro_batch_size": micro, "max_tokens": steps * micro * SEQ_LEN,
                  "max_seq_length": SEQ_LEN, "lr_warmup_steps": SCHEDULE["warmup_steps"],
                  "max_norm": SCHEDULE["grad_clip"],
                  "min_lr": SCHEDULE["lr"] * SCHEDULE["min_lr_ratio"], "tie_embeddings": False},
        "eval": {"interval": 100000, "max_iters": 8, "initial_validation": False,
                 "final_validation": False},
        "optimizer": {"class_path": "torch.optim.AdamW",
                      "init_args": {"lr": SCHEDULE["lr"], "weight_decay": SCHEDULE["weight_decay"],
                                    "betas": [SCHEDULE["beta1"], SCHEDULE["beta2"]]}},
        "devices": 1,
        "tokenizer_dir": str(tokenizer),
        "logger_name": "csv",
        "seed": seed,
    }  # fmt: skip
    out.mkdir(parents=True)
    config_file = out.parent / f"{out.name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    litgpt = python.parent / "litgpt"
    env = {"TORCHDYNAMO_DISABLE": "0" if compiled else "1"}
    if cached_host_memory:
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**40))
    seconds = timed([str(litgpt), "pretrain", "--config", str(config_file)], env, cwd=out)
    [metrics] = out.glob("logs/csv/**/metrics.csv") or list(out.rglob("metrics.csv"))[:1]
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("loss")]
    times = {int(r["iter"]): float(r["time"]) for r in rows if r.get("time")}
    tokens_per_step = micro * SEQ_LEN
    steady = steady_tokens_per_s(times, steps, tokens_per_step)
    scores = {}
    for key, windows in scored.items():
        done = subprocess.run(
            [str(python), str(REPO / "bench" / "litgpt_side.py"), "eval",
             str(out / "final" / "lit_model.pth"), json.dumps(litgpt_config()), str(windows)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        scores[key] = json.loads(done.stdout.strip().splitlines()[-1])["val_loss"]
    return {
        "tokens_per_s": steady,
        "train_loss_last10": statistics.fmean(float(r["loss"]) for r in rows[-10:]),
        **scores,
        "seconds": seconds,
    }


def plain_loop(python: Path, train: Path, steps: int, compiled: bool) -> dict[str, float]:
    command = [str(python), str(REPO / "bench" / "litgpt_side.py"), "loop",
               json.dumps(litgpt_config()), str(train), str(steps), json.dumps(SCHEDULE)]  # fmt: skip
    done = subprocess.run([*command, *(["--compile"] if compiled else [])],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def hf_plain_loop(train: Path, steps: int, compiled: bool) -> dict[str, float]:
    """A plain PyTorch loop on Quark's model (transformers' LlamaForCausalLM, scaled init), with
    Quark's loss (compiled together with the model when `compiled`) and fused AdamW: what the
    Hugging Face model costs against LitGPT's own, without either framework."""
    import numpy as np
    import torch

    from quark.models.llama import build_llama
    from quark.training.module import next_token_loss

    torch.manual_seed(42)
    model = build_llama(init="scaled", **SHAPE, max_seq_len=512).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": SCHEDULE["weight_decay"]},
         {"params": rest, "weight_decay": 0.0}],
        lr=SCHEDULE["lr"], betas=(SCHEDULE["beta1"], SCHEDULE["beta2"]), fused=True,
    )  # fmt: skip
    loss_of = torch.compile(next_token_loss) if compiled else next_token_loss
    warmup, floor = SCHEDULE["warmup_steps"], SCHEDULE["min_lr_ratio"]

    def lr_at(step: int) -> float:
        if step < warmup:
            return SCHEDULE["lr"] * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return SCHEDULE["lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    return timed_plain_loop(
        list(model.parameters()), optimizer, torch.from_numpy(np.load(train)).long(), steps,
        SCHEDULE, lr_at, lambda batch: loss_of(model, batch, batch, None),
    )  # fmt: skip


# ---------------------------------------------------------------- the comparison


PIPELINE = "Quark raw text to model in one command (pipeline=quickstart, eager, seed 1234)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--init", default="scaled", help="Quark's model.init (scaled | hf)")
    parser.add_argument("--also-init", default="hf", help="a second Quark init to run ('' none)")
    parser.add_argument("--litgpt-python", type=Path,
                        default=REPO / "bench" / ".venv-litgpt" / "bin" / "python")  # fmt: skip
    parser.add_argument("--no-plain", action="store_true", help="skip the plain loops")
    parser.add_argument("--no-litgpt", action="store_true", help="skip the litgpt pretrain runs")
    parser.add_argument(
        "--loss-only",
        action="store_true",
        help="losses at --steps only: Quark eager (each init) and LitGPT's default; no compiled "
        "Quark, no LitGPT eager, no plain loops (for long runs, e.g. --steps 600 --rounds 1)",
    )
    parser.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="share the machine's torch.compile caches between runs (by default each run "
        "compiles from nothing, as a new user's first run does; steady tokens/s is the same "
        "either way, wall times are not)",
    )
    args = parser.parse_args()
    if not args.litgpt_python.exists():
        sys.exit(f"{args.litgpt_python}: no LitGPT environment; run `make litgpt-venv` first")

    work = Path(tempfile.mkdtemp(prefix="quark-vs-litgpt-"))
    global FRESH_COMPILE_CACHES
    FRESH_COMPILE_CACHES = None if args.warm_compile_cache else work / "compile-caches"
    raw = work / "raw"
    files = write_raw_text(raw)
    outputs = work / "outputs"
    print(f"{files} standard-library files as .txt in {raw}; {args.steps} steps, "
          f"{args.rounds} rounds, torch threads {os.cpu_count()}, compile caches "
          f"{'shared' if args.warm_compile_cache else 'new for each run'}", flush=True)  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {}
    data_seconds: list[float] = []
    data_run: Path | None = None
    scored: dict[str, Path] = {}
    held_out: set[str] = set()
    train = None
    for round_ in range(args.rounds):
        seed = FIRST_SEED + round_
        # Quark's data step each round (its time is part of raw text to model, two commands)
        run, seconds = quark_data(outputs, raw)
        data_seconds.append(seconds)
        if data_run is None:
            data_run = run
            scored, train = quark_windows(run, work, args.steps)
            held_out = quark_val_documents(raw, run)
            # every val document is one of the files held out of LitGPT's text (a file may be
            # held out and still not in val: dropped by cleaning or dedup)
            index = json.loads((run / "shards" / "index.json").read_text())
            assert 0 < index["splits"]["val"]["documents"] <= len(held_out)
        assert train is not None
        runs: list[tuple[str, Any]] = [
            (f"Quark eager (init={args.init})",
             partial(quark_pretrain, outputs, run, args.steps, args.init, False, seed, scored)),
            (f"Quark trainer.compile=true (init={args.init})",
             partial(quark_pretrain, outputs, run, args.steps, args.init, True, seed, scored)),
            ("LitGPT litgpt pretrain (compiled)",
             partial(litgpt_pretrain, args.litgpt_python, raw, held_out, run / "tokenizer",
                     work / f"litgpt-c{round_}", args.steps, True, seed, scored)),
            ("LitGPT (compiled), host memory cached as Quark's",
             partial(litgpt_pretrain, args.litgpt_python, raw, held_out, run / "tokenizer",
                     work / f"litgpt-m{round_}", args.steps, True, seed, scored, True)),
            ("LitGPT, compile disabled",
             partial(litgpt_pretrain, args.litgpt_python, raw, held_out, run / "tokenizer",
                     work / f"litgpt-e{round_}", args.steps, False, seed, scored)),
            (PIPELINE,
             partial(quark_raw_text_to_model, work / f"outputs-pipeline{round_}", raw,
                     args.steps, args.init, scored)),
        ]  # fmt: skip
        if args.also_init:
            runs.insert(1, (f"Quark eager (init={args.also_init})",
                            partial(quark_pretrain, outputs, run, args.steps, args.also_init,
                                                   False, seed, scored)))  # fmt: skip
        runs.append(
            (f"Quark eager (init={args.init}), its own default schedule: lr 3e-3, 20 warmup",
             partial(quark_pretrain, outputs, run, args.steps, args.init, False, seed, scored, True))
        )  # fmt: skip
        if args.no_litgpt:
            runs = [r for r in runs if not r[0].startswith("LitGPT")]
        if args.loss_only:
            runs = [r for r in runs if "compile=true" not in r[0] and "disabled" not in r[0]
                    and "cached" not in r[0] and r[0] != PIPELINE]  # fmt: skip
        if not (args.no_plain or args.loss_only):
            runs += [
                ("plain loop, LitGPT's model, eager",
                 partial(plain_loop, args.litgpt_python, train, args.steps, False)),
                ("plain loop, LitGPT's model, compiled",
                 partial(plain_loop, args.litgpt_python, train, args.steps, True)),
                ("plain loop, Quark's HF model, eager",
                 partial(hf_plain_loop, train, args.steps, False)),
                ("plain loop, Quark's HF model, model+loss compiled",
                 partial(hf_plain_loop, train, args.steps, True)),
            ]  # fmt: skip
        # alternate the order between rounds, so drift is shared
        for name, run_it in runs if round_ % 2 == 0 else runs[::-1]:
            result = run_it()
            results.setdefault(name, []).append(result)
            print(f"round {round_ + 1}: {name}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)), flush=True)  # fmt: skip

    def mean(name: str, key: str) -> float:
        values = [r[key] for r in results.get(name, []) if key in r]
        return statistics.fmean(values) if values else float("nan")

    def per_seed(name: str, key: str) -> str:
        values = [r[key] for r in results.get(name, []) if key in r]
        return " / ".join(f"{v:.3f}" for v in values) if values else ""

    litgpt = "LitGPT litgpt pretrain (compiled)"
    eager = f"Quark eager (init={args.init})"
    compiled = f"Quark trainer.compile=true (init={args.init})"
    import numpy as np

    windows = len(np.load(scored["val_loss"])) if scored else 0
    seeds = ", ".join(str(FIRST_SEED + r) for r in range(args.rounds))
    print(
        f"\n| run | steady tokens/s (steps {WARM_STEPS + 1}-{args.steps}) | x LitGPT | "
        f"train loss (own batches, last 10 steps) | loss on {VAL_WINDOWS} training-split windows | "
        f"val loss ({windows} windows of the held-out documents) | val loss per seed ({seeds}) "
        "| wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in results:
        speed = mean(name, "tokens_per_s")
        print(
            f"| {name} | {speed:,.0f} | {speed / mean(litgpt, 'tokens_per_s'):.3f} | "
            f"{mean(name, 'train_loss_last10'):.3f} | {mean(name, 'train_split_loss'):.3f} | "
            f"{mean(name, 'val_loss'):.3f} | {per_seed(name, 'val_loss')} | "
            f"{mean(name, 'seconds'):.1f} |"
        )
    if compiled in results:
        ratio = mean(compiled, "tokens_per_s") / mean(eager, "tokens_per_s")
        print(f"\nQuark trainer.compile=true over eager, steady state: {ratio:.3f}")
    if eager in results and litgpt in results:
        two_commands = statistics.fmean(data_seconds) + mean(eager, "seconds")
        print(
            f"raw text to a trained {args.steps}-step model, LitGPT {mean(litgpt, 'seconds'):.1f} "
            f"s against Quark in two commands {two_commands:.1f} s (data step "
            f"{statistics.fmean(data_seconds):.1f} s + pretrain): "
            f"{mean(litgpt, 'seconds') / two_commands:.2f}x faster"
        )
    if PIPELINE in results and litgpt in results:
        one_command = mean(PIPELINE, "seconds")
        print(
            f"raw text to a trained {args.steps}-step model, LitGPT {mean(litgpt, 'seconds'):.1f} "
            f"s against Quark in one command (pipeline=quickstart) {one_command:.1f} s: "
            f"{mean(litgpt, 'seconds') / one_command:.2f}x faster"
        )
    print(f"(work files in {work})")


if __name__ == "__main__":
    main()
