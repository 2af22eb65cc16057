"""The LitGPT side of bench/pretrain_vs_litgpt.py, run with the Python of LitGPT's own virtual
environment (it never imports quark).

    litgpt_side.py eval CHECKPOINT CONFIG_JSON WINDOWS_NPY       -> {"val_loss": ...}
    litgpt_side.py loop CONFIG_JSON WINDOWS_NPY STEPS [--compile] -> {"tokens_per_s": ..., ...}

`eval` scores a `litgpt pretrain` checkpoint (lit_model.pth) on token windows of seq_len + 1;
`loop` trains LitGPT's GPT with a plain PyTorch loop (forward, chunked cross-entropy, backward,
clip, AdamW step) on the given windows, with LitGPT's own initialisation and schedule.
"""

from __future__ import annotations

import json
import sys
from functools import partial

import numpy as np
import torch


def model_of(config_json: str) -> torch.nn.Module:
    from litgpt.model import GPT, Config

    return GPT(Config(**json.loads(config_json)))


def evaluate(checkpoint: str, config_json: str, windows_npy: str) -> dict[str, float]:
    from litgpt.utils import chunked_cross_entropy

    model = model_of(config_json)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = state.get("model", state)
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state.items()})
    windows = torch.from_numpy(np.load(windows_npy)).long()
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in windows.split(8):
            logits = model(batch[:, :-1])
            loss = chunked_cross_entropy(logits, batch[:, 1:], chunk_size=0)
            total += float(loss) * batch[:, 1:].numel()
            count += batch[:, 1:].numel()
    return {"val_loss": total / count}


def loop(config_json: str, windows_npy: str, steps: int, compile: bool, schedule: dict) -> dict:
    from litgpt.pretrain import get_lr, initialize_weights
    from litgpt.utils import chunked_cross_entropy

    torch.manual_seed(42)
    model = model_of(config_json)

    class Plain:  # initialize_weights asks the Fabric strategy only whether it is FSDP
        strategy = None

    initialize_weights(Plain(), model, n_layer=model.config.n_layer, n_embd=model.config.n_embd)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=schedule["lr"],
        weight_decay=schedule["weight_decay"],
        betas=(schedule["beta1"], schedule["beta2"]),
    )
    forward = torch.compile(model) if compile else model
    lr_at = partial(
        get_lr,
        schedule["lr"],
        warmup_iters=schedule["warmup_steps"],
        max_iters=steps,
        min_lr=schedule["lr"] * schedule["min_lr_ratio"],
    )
    # this script's folder is on sys.path; that module's top imports only the standard library
    from pretrain_vs_litgpt import timed_plain_loop

    return timed_plain_loop(
        list(model.parameters()),
        optimizer,
        torch.from_numpy(np.load(windows_npy)).long(),
        steps,
        schedule,
        lr_at,
        lambda batch: chunked_cross_entropy(forward(batch[:, :-1]), batch[:, 1:]),
    )


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "eval":
        print(json.dumps(evaluate(*args)))
    elif command == "loop":
        config_json, windows_npy, steps, schedule_json, *flags = args
        result = loop(
            config_json, windows_npy, int(steps), "--compile" in flags, json.loads(schedule_json)
        )
        print(json.dumps(result))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
