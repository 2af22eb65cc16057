"""The gateway's own cost: latency and tokens/s of a model called directly against the same
model called through `step=orchestrate`, at 1, 8 and 32 concurrent clients, in the same run.

The model (a run or model directory: --model-dir, else the newest finetune run of
$QUARK_OUTPUT_DIR's experiment `demo`) is served by `launch.py step=serve` in a process of its
own; the gateway is `launch.py step=orchestrate` with that server as its only backend (a
`url` backend, so it shares no process with the model) and runs its evaluation workload
(quark.orchestrate.evaluation): the same requests, greedy, to the server directly, through
the gateway by name, and through the gateway's router ("auto": the classifier embeds each
request with MiniLM first). Figures are the gateway run's manifest metrics.

    .venv/bin/python bench/gateway_overhead.py [--model-dir DIR] [--requests 64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
URL_LINE = re.compile(r"serve: .* on (http://127\.0\.0\.1:\d+)/v1")
CONCURRENCY = (1, 8, 32)


def newest_finetune() -> Path:
    root = Path(os.environ.get("QUARK_OUTPUT_DIR", REPO / "outputs")) / "demo" / "finetune"
    runs = sorted(p for p in root.glob("*") if (p / "manifest.json").is_file())
    if not runs:
        sys.exit(f"no finetune run under {root}: give --model-dir")
    return runs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=64, help="per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    model_dir = args.model_dir or newest_finetune()
    outputs = Path(tempfile.mkdtemp(prefix="gateway_bench_"))
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    server = subprocess.Popen(
        [sys.executable, "launch.py", "step=serve", "step.port=0", f"step.model_dir={model_dir}",
         "step.model_name=model"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = next(m.group(1) for line in server.stdout if (m := URL_LINE.search(line)))
        levels = ",".join(str(c) for c in CONCURRENCY)
        done = subprocess.run(
            [sys.executable, "launch.py", "step=orchestrate", "step.port=0",
             f"step.backends=[{{name:model,url:'{url}/v1',skills:[arithmetic,code,docs,smalltalk]}}]",
             "step.evaluate.enabled=true", f"step.evaluate.concurrency=[{levels}]",
             f"step.evaluate.latency_requests={args.requests}",
             f"step.evaluate.max_tokens={args.max_tokens}", "step.evaluate.bandit_rounds=0"],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        server.kill()
    run = re.search(r"orchestrate completed in .*: (\S+)", done.stdout + done.stderr)
    assert run, done.stdout + done.stderr
    metrics = json.loads((Path(run.group(1)) / "manifest.json").read_text())["metrics"]
    print(f"model {model_dir}; {args.requests} requests per level, {args.max_tokens} tokens max")
    print(f"{'clients':>7} {'direct p50':>11} {'gateway p50':>12} {'auto p50':>9} "
          f"{'direct tok/s':>13} {'gateway tok/s':>14} {'p50 ratio':>9}")  # fmt: skip
    for level in CONCURRENCY:
        m = {k: metrics[f"latency/{k}/c{level}/p50_s"] for k in ("direct", "gateway", "auto")}
        t = {k: metrics[f"latency/{k}/c{level}/tokens_per_s"] for k in ("direct", "gateway")}
        print(f"{level:>7} {m['direct']:>11.3f} {m['gateway']:>12.3f} {m['auto']:>9.3f} "
              f"{t['direct']:>13.1f} {t['gateway']:>14.1f} {m['gateway'] / m['direct']:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
