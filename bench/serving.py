"""Serving throughput: tokens/s of `step=serve` at 1, 8 and 32 concurrent streaming clients,
against offline batched generation of the same prompts (transformers' generate, left-padded
batches as large as the client count) in the same run.

One model (llama_tiny pretrained briefly on the default stdlib corpus by `launch.py step=data`
and `step=pretrain`, unless --model-dir is given) is served by `launch.py step=serve` as a user
runs it, in its own process; the clients run here (asyncio, httpx), each sending its requests
one after another, streamed, greedy, exactly --new-tokens tokens each (ignore_eos). The server
is idle while the offline figures are taken, and the other way round.

Figures: completion tokens per second of wall time for each concurrency, served and offline,
their ratio, the scheduler's mean decode batch (its /health counters), and the median time to
the first streamed text. Both sides share the machine's cores with each other's idle process
and, while serving, with the clients themselves.

    .venv/bin/python bench/serving.py [--threads 2] [--new-tokens 64] [--requests 2]
    .venv/bin/python bench/serving.py --model-dir RUN_OR_HF_DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from export_latency import launch  # noqa: E402

CONCURRENCY = (1, 8, 32)
URL_LINE = re.compile(r"serve: .* on (http://127\.0\.0\.1:\d+)/v1")


def prompts(tokenizer: object, count: int, length: int) -> list[str]:
    """`count` different snippets of standard-library source, `length` tokens each."""
    import inspect
    import json as json_module

    text = inspect.getsource(json_module.decoder) + inspect.getsource(json_module.encoder)
    ids = tokenizer.encode(text)  # type: ignore[attr-defined]
    step = max((len(ids) - length) // count, 1)
    return [tokenizer.decode(ids[i * step : i * step + length]) for i in range(count)]  # type: ignore[attr-defined]


async def serve_round(url: str, clients: int, texts: list[str], new_tokens: int) -> dict:
    """Every client streams its share of `texts`, one request after another."""
    import httpx

    first_text: list[float] = []
    tokens = 0

    async def client_loop(http: httpx.AsyncClient, mine: list[str]) -> None:
        nonlocal tokens
        for prompt in mine:
            body = {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0,
                    "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
            started = time.perf_counter()
            seen = False
            async with http.stream("POST", "/v1/completions", json=body) as response:
                assert response.status_code == 200, await response.aread()
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        tokens += chunk["usage"]["completion_tokens"]
                    elif not seen and chunk["choices"][0]["text"]:
                        seen = True
                        first_text.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(http, texts[i::clients]) for i in range(clients)))
        seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": seconds, "first_text_s": statistics.median(first_text)}


def offline_round(
    model: object, tokenizer: object, batch: int, texts: list[str], new_tokens: int
) -> dict:
    """transformers' generate over `texts` in left-padded batches of `batch`, greedy."""
    import torch

    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        inputs = tokenizer(texts[start : start + batch], return_tensors="pt", padding=True)  # type: ignore[operator]
        with torch.inference_mode():
            out = model.generate(  # type: ignore[attr-defined]
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
            )  # fmt: skip
        tokens += (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
    return {"tokens": tokens, "seconds": time.perf_counter() - started}


def start_server(outputs: Path, model_source: Path, threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs), "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(
        [sys.executable, "launch.py", "experiment_name=bench", "step=serve",
         f"step.model_dir={model_source}", "step.port=0", f"step.threads={threads}",
         f"step.max_batch_size={max(CONCURRENCY)}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if match := URL_LINE.search(line):
            return process, match.group(1)
    sys.exit(f"step=serve did not start (exit {process.wait()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="pretrain/finetune run or HF model dir")
    parser.add_argument("--outputs", type=Path, help="run directories (default: a temp dir)")
    parser.add_argument("--steps", type=int, default=30, help="pretrain steps when training")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    args = parser.parse_args()

    import httpx
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quark.lineage.models import locate_model
    from quark.steps.serve import MODEL_DIR_ALLOWED, SERVED_EXPORTS

    torch.set_num_threads(args.threads)
    outputs = args.outputs or Path(tempfile.mkdtemp(prefix="quark_bench_"))
    outputs.mkdir(parents=True, exist_ok=True)
    if args.model_dir:
        model_source = args.model_dir.resolve()
    else:
        print("data step (stdlib corpus) ...", flush=True)
        launch(outputs, args.threads, "step=data")
        print(f"pretrain llama_tiny for {args.steps} steps ...", flush=True)
        pretrain = launch(
            outputs, args.threads, "step=pretrain", "model=llama_tiny",
            f"step.max_steps={args.steps}", f"step.val_every_n_steps={args.steps}",
            f"step.checkpoint_every_n_steps={args.steps}", "trainer.micro_batch_size=8",
        )  # fmt: skip
        model_source = Path(pretrain["run_dir"])
    directory = locate_model(
        model_source, "--model-dir", MODEL_DIR_ALLOWED, SERVED_EXPORTS
    ).directory
    tokenizer = AutoTokenizer.from_pretrained(directory, padding_side="left")
    texts = prompts(tokenizer, max(CONCURRENCY) * args.requests, args.prompt_tokens)

    served = {}
    process, url = start_server(outputs, model_source, args.threads)
    try:
        asyncio.run(serve_round(url, 1, texts[:1], 4))  # warm-up
        for clients in CONCURRENCY:
            before = httpx.get(f"{url}/health").json()
            served[clients] = asyncio.run(
                serve_round(url, clients, texts[: clients * args.requests], args.new_tokens)
            )
            after = httpx.get(f"{url}/health").json()
            steps = after["decode_steps"] - before["decode_steps"]
            sizes = {k: after["decode_batch_sizes"][k] - before["decode_batch_sizes"].get(k, 0)
                     for k in after["decode_batch_sizes"]}  # fmt: skip
            served[clients]["mean_batch"] = sum(int(k) * v for k, v in sizes.items()) / steps
            print(f"served {clients} clients: {served[clients]}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    offline_round(model, tokenizer, 1, texts[:1], 4)  # warm-up
    offline = {}
    for clients in CONCURRENCY:
        offline[clients] = offline_round(
            model, tokenizer, clients, texts[: clients * args.requests], args.new_tokens
        )
        print(f"offline batch {clients}: {offline[clients]}", flush=True)

    config = json.loads((directory / "config.json").read_text())
    print(
        f"\nmodel {directory} (hidden {config['hidden_size']}, {config['num_hidden_layers']} "
        f"layers, vocab {config['vocab_size']}); threads {args.threads}, torch "
        f"{torch.__version__}; {args.requests} requests per client, prompts of "
        f"{args.prompt_tokens} tokens, {args.new_tokens} new tokens each\n"
    )
    print("| clients | served tok/s | offline generate tok/s (batch = clients) | served / offline "
          "| mean decode batch | median first text |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for clients in CONCURRENCY:
        s, o = served[clients], offline[clients]
        ours, theirs = s["tokens"] / s["seconds"], o["tokens"] / o["seconds"]
        print(
            f"| {clients} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x | "
            f"{s['mean_batch']:.1f} | {1000 * s['first_text_s']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
