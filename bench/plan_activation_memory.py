"""The planner's memory prediction against the measured peak of real training steps on CPU.

For each batch size, sequence length, precision and checkpointing setting, a fresh process
builds a tiny Llama (the planner's own `build_llama`), runs two warm-up AdamW steps, then a third
under torch.profiler(profile_memory=True), which reports every allocation of torch's CPU
allocator with a running total: the peak of that total is the measured memory of a step
(weights, AdamW states, gradients and activations together). The prediction is the planner's
`total` for a single device (quark.planning.memory.estimate_memory). Target (issue 2): within 15 %.

    .venv/bin/python bench/plan_activation_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from quark.models.llama import LlamaShape
from quark.planning.memory import Layout, estimate_memory

SHAPE = LlamaShape(
    vocab_size=8192,
    hidden_size=256,
    num_layers=4,
    num_heads=8,
    num_kv_heads=4,
    intermediate_size=688,
    max_seq_len=1024,
)

CHILD = r"""
import contextlib, json, sys, warnings
warnings.filterwarnings("ignore")
import torch
from torch.profiler import ProfilerActivity, profile
from quark.models.llama import build_llama
torch.set_num_threads(2)
c = json.loads(sys.argv[1])
torch.manual_seed(0)
model = build_llama(**c["shape"]).train()
if c["checkpointing"]:
    model.gradient_checkpointing_enable()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
ids = torch.randint(0, c["shape"]["vocab_size"], (c["b"], c["s"]))

def step():
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if c["precision"] == "bf16-mixed" else contextlib.nullcontext()
    with autocast:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

step(); step()
with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
    step()

def walk(events):
    for event in events:
        yield event
        yield from walk(event.children)

allocations = sorted(
    (e for e in walk(prof.profiler.kineto_results.experimental_event_tree()) if e.tag == torch._C._profiler._EventType.Allocation),
    key=lambda e: e.start_time_ns,
)
# the profiler's running total starts at zero: add what was resident before the step
resident = sum(p.numel() * p.element_size() for p in model.parameters())
resident += sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))
before = allocations[0].extra_fields.total_allocated - allocations[0].extra_fields.alloc_size
growth = max(e.extra_fields.total_allocated for e in allocations) - before
print("RESULT " + json.dumps({"resident": resident, "growth": growth, "peak": resident + growth}))
"""


def measure(b: int, s: int, precision: str, checkpointing: bool) -> dict[str, int]:
    config = {
        "shape": SHAPE.as_dict(),
        "b": b,
        "s": s,
        "precision": precision,
        "checkpointing": checkpointing,
    }
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(done.stderr[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three configurations only")
    args = parser.parse_args()
    grid = [(b, s) for b in (1, 4, 8) for s in (128, 512)]
    settings = [("32-true", False), ("bf16-mixed", False), ("32-true", True), ("bf16-mixed", True)]
    runs = [(b, s, p, c) for p, c in settings for b, s in grid]
    if args.quick:
        runs = [
            (1, 128, "32-true", False),
            (8, 512, "32-true", False),
            (8, 512, "bf16-mixed", True),
        ]
    print(
        "| micro-batch | seq len | precision | checkpointing | predicted MiB | measured MiB | error |"
    )
    print("|---|---|---|---|---|---|---|")
    errors = []
    for b, s, precision, checkpointing in runs:
        predicted = estimate_memory(
            SHAPE, Layout("single", 1, 1, precision, b, s, checkpointing)
        ).total
        measured = measure(b, s, precision, checkpointing)["peak"]
        error = predicted / measured - 1
        errors.append(abs(error))
        print(
            f"| {b} | {s} | {precision} | {'yes' if checkpointing else 'no'} | {predicted / 2**20:.1f} | {measured / 2**20:.1f} | {error:+.1%} |",
            flush=True,
        )
    print(
        f"\nruns: {len(runs)}; largest error {max(errors):.1%}, mean {sum(errors) / len(errors):.1%} (target: within 15 %)"
    )


if __name__ == "__main__":
    main()
