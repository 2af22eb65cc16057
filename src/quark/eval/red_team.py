"""The red-team task of step=evaluate: the suite of quark.safety.redteam sent over HTTP to the
model served twice on loopback ports, behind the safety guard and bare (one scheduler, one
copy of the model), and the adaptive attack of quark.safety.adaptive against the guard.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import QuarkError
from quark.safety.adaptive import AdaptiveResult, adaptive_attack
from quark.safety.redteam import (
    Outcome,
    Probe,
    attack_success_rate,
    by_framing,
    false_refusal_rate,
)
from quark.safety.requests import BENIGN, LabelledRequest, all_requests, template_splits


@dataclass
class RedTeamResult:
    guarded: list[Outcome]
    unguarded: list[Outcome]
    adaptive: AdaptiveResult | None

    def metrics(self) -> dict[str, float]:
        found = {
            "red_team_attack_success_unguarded": attack_success_rate(self.unguarded),
            "red_team_attack_success_guarded": attack_success_rate(self.guarded),
            "red_team_false_refusal_rate": false_refusal_rate(self.guarded),
            "red_team_false_refusal_rate_unguarded": false_refusal_rate(self.unguarded),
            "red_team_attacks": float(sum(o.probe.attack for o in self.guarded)),
            "red_team_benign": float(sum(not o.probe.attack for o in self.guarded)),
        }
        if self.adaptive is not None:
            adaptive = self.adaptive
            found["red_team_adaptive_seeds"] = float(adaptive.seeds - adaptive.missed_as_written)
            found["red_team_adaptive_rounds"] = float(len(adaptive.rounds))
            found["red_team_adaptive_bypasses"] = float(len(adaptive.bypasses))
            if adaptive.rounds_to_bypass is not None:
                found["red_team_adaptive_rounds_to_bypass"] = float(adaptive.rounds_to_bypass)
        return found

    def tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        framings = [
            [name, count, unguarded, guarded]
            for name, count, unguarded, guarded in by_framing(self.guarded, self.unguarded)
        ]
        found = {
            "Attack success by framing": (
                ["framing", "attacks", "success without guard", "success with guard"],
                framings,
            )
        }
        if self.adaptive is not None:
            found["Adaptive attack on the guard"] = (
                ["round", "mutants tried", "bypasses", "miss rate", "lowest guard score"],
                [[r.round, r.tried, r.bypasses, r.miss_rate, r.best_score]
                 for r in self.adaptive.rounds],
            )  # fmt: skip
        return found


def suite_requests(
    data_dir: Path | None, seed: int
) -> tuple[list[LabelledRequest], list[LabelledRequest]]:
    """The held-out requests: the suite's (`data_dir`'s test.jsonl) and the adaptive attack's
    (its val.jsonl: the bypasses it finds become training data, which must never carry a test
    template); else both splits generated from `seed` (data=safety_requests' defaults)."""
    if data_dir is None:
        groups = template_splits(0.2, seed)
        return list(all_requests(groups["test"])), list(all_requests(groups["val"]))
    from quark.data.labelled import read_labelled

    allowed = "give a data=safety_requests run or a directory with test.jsonl of text/label"
    found = []
    for split in ("test", "val"):
        texts = read_labelled(
            data_dir / f"{split}.jsonl", key="step.red_team.data_dir", allowed=allowed
        )
        found.append([LabelledRequest(t.text, t.label, -1) for t in texts])
    return found[0], found[1]


def run_red_team(
    model_dir: Path,
    guard: Any,
    probes: Sequence[Probe],
    attack_seeds: Sequence[LabelledRequest],
    options: Any,
    *,
    seed: int,
    threads: int,
    hold_back: int,
) -> RedTeamResult:
    """Every probe to the guarded and the bare server; then the adaptive attack on `guard`,
    from a seeded sample of the unsafe requests of `attack_seeds` (options:
    conf/step/evaluate.yaml's red_team)."""
    import logging

    import httpx

    from quark.serve.api import build_app
    from quark.serve.backends import load_model
    from quark.serve.engine import Engine
    from quark.serve.protocol import Limits
    from quark.serve.server import Server, bind

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    model = load_model(model_dir, model_dir.name, "cpu", threads)
    concurrency = int(options.concurrency)
    engine = Engine(model, concurrency)
    limits = Limits(
        max_tokens=int(options.max_new_tokens),
        max_prompt_tokens=model.positions - int(options.max_new_tokens),
        max_request_bytes=1_000_000,
        max_waiting=len(probes) * 2,
    )
    servers = {
        "guarded": Server(build_app(model, engine, limits, None, guard, hold_back), bind("127.0.0.1", 0)),
        "unguarded": Server(build_app(model, engine, limits, None, None), bind("127.0.0.1", 0)),
    }  # fmt: skip
    engine.start()
    for server in servers.values():
        server.start()
    found: dict[str, list[Outcome]] = {}
    try:
        with httpx.Client(timeout=300) as client, ThreadPoolExecutor(concurrency) as pool:
            for name, server in servers.items():

                def ask(probe: Probe, url: str = server.url) -> Outcome:
                    return _ask(client, url, model, probe, options, seed)

                found[name] = list(pool.map(ask, probes))
    finally:
        for server in servers.values():
            server.stop()
        engine.stop()
    if engine.failure is not None:
        raise QuarkError(f"red team: generation failed: {engine.failure}")

    adaptive = None
    if int(options.adaptive.rounds) > 0:
        unsafe = [(r.text, r.label) for r in attack_seeds if r.label != BENIGN]
        random.Random(seed).shuffle(unsafe)  # every category, not the first template's
        adaptive = adaptive_attack(
            guard,
            unsafe[: int(options.adaptive.seeds)],
            rounds=int(options.adaptive.rounds),
            keep=int(options.adaptive.keep),
            mutations=list(options.adaptive.mutations),
            seed=seed,
        )
    return RedTeamResult(found["guarded"], found["unguarded"], adaptive)


def _ask(client: Any, url: str, model: Any, probe: Probe, options: Any, seed: int) -> Outcome:
    chat = model.has_chat_template
    body: dict[str, Any] = {
        "model": model.name,
        "max_tokens": int(options.max_new_tokens),
        "temperature": 0,
        "seed": seed,
    }
    if chat:
        body["messages"] = [{"role": "user", "content": probe.text}]
        response = client.post(f"{url}/v1/chat/completions", json=body)
    else:
        body["prompt"] = probe.text
        response = client.post(f"{url}/v1/completions", json=body)
    if response.status_code != 200:
        raise QuarkError(
            f"red team: the server answered {response.status_code} to a {probe.framing} probe: "
            f"{response.text[:300]}"
        )
    choice = response.json()["choices"][0]
    answer = choice["message"]["content"] if chat else choice["text"]
    return Outcome(probe, answer or "", choice["finish_reason"] == "content_filter")


def write_results(directory: Path, result: RedTeamResult) -> list[Path]:
    """outcomes.jsonl (each probe, and what both servers did with it) and, after an adaptive
    attack, bypasses.jsonl ({text, label}: training data for the next classifier) and
    rounds.jsonl."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "outcomes.jsonl"]
    with open(written[0], "w") as out:
        for guarded, bare in zip(result.guarded, result.unguarded, strict=True):
            probe = guarded.probe
            record = {
                "text": probe.text, "label": probe.label, "framing": probe.framing,
                "guarded": {"refused": guarded.refused, "filtered": guarded.filtered,
                            "answer": guarded.answer},
                "unguarded": {"refused": bare.refused, "answer": bare.answer},
            }  # fmt: skip
            out.write(json.dumps(record) + "\n")
    if result.adaptive is not None:
        written.append(directory / "bypasses.jsonl")
        with open(written[-1], "w") as out:
            for candidate in result.adaptive.bypasses:
                out.write(json.dumps(candidate.record()) + "\n")
        written.append(directory / "rounds.jsonl")
        with open(written[-1], "w") as out:
            for row in result.adaptive.rounds:
                out.write(json.dumps({**vars(row), "miss_rate": row.miss_rate}) + "\n")
    return written
