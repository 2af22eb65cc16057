"""The gateway measured on a mixed workload it never trained on.

The workload is the test split of the generated requests (quark.orchestrate.kinds: arithmetic,
code, documentation questions, small talk; split by a hash of the text, so none of it is what
the classifier trained on). Over HTTP, with the gateway running:

    routing      the kind the router finds against the label; whether the backend it picked
                 has that kind among its skills
    accuracy     end-to-end task accuracy of the gateway ("model": "auto"), of each backend
                 alone (named), and of oracle routing (right when any backend is right)
    latency      p50/p95 per request and tokens/s at each step.evaluate.concurrency, calling
                 the most accurate model backend directly, the same through the gateway (the
                 gateway's own overhead), and "auto"
    bandit       Thompson sampling replayed on the answers each backend gave: how often it
                 picks the best backend for a kind as rounds go by

Results go to the manifest (metrics), evaluation/answers.jsonl and report.html.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import statistics
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("quark")
SCORED_KINDS = ("arithmetic", "code", "docs")


def workload(per_kind: int, seed: int, classifier_per_kind: int) -> list[Any]:
    """`per_kind` test-split requests of each kind (held out of the classifier's training)."""
    from quark.orchestrate.kinds import KINDS, labelled_requests

    # generate enough that each kind has per_kind in its test split (about 30% of them)
    pool = labelled_requests(max(classifier_per_kind, per_kind * 4), seed=seed)
    chosen = []
    for kind in KINDS:
        chosen += [r for r in pool if r.kind == kind and r.split == "test"][:per_kind]
    return chosen


async def ask_all(
    url: str,
    api_key: str | None,
    requests: list[Any],
    model: str,
    max_tokens: int,
    concurrency: int,
) -> list[dict[str, Any]]:
    """Each request's answer through `url` (a gateway or a backend): text, route, seconds,
    tokens; a failed request has its error instead."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    slots = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, request: Any) -> dict[str, Any]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": request.text}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        async with slots:
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/chat/completions", json=body)
                answer = response.json()
            except (httpx.HTTPError, ValueError) as exc:  # counted as a failed request
                return {
                    "error": f"{type(exc).__name__}: {exc}",
                    "seconds": time.perf_counter() - started,
                }
            seconds = time.perf_counter() - started
        if response.status_code != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            said = error.get("message") if isinstance(error, dict) else str(answer)[:200]
            return {"error": said, "seconds": seconds}
        usage = answer.get("usage") or {}
        return {
            "text": answer["choices"][0]["message"]["content"] or "",
            "backend": answer.get("model"),
            "route": answer.get("route"),
            "seconds": seconds,
            "tokens": int(usage.get("completion_tokens") or 0),
        }

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=300, headers=headers, limits=limits) as http:
        return list(await asyncio.gather(*(one(http, r) for r in requests)))


def evaluate_gateway(
    cfg: Any, run: Any, url: str, api_key: str | None, fleet: Any, router: Any, outcomes: Any
) -> dict[str, float]:
    from quark.orchestrate.backends import ModelBackend
    from quark.orchestrate.kinds import answer_is_right

    settings = cfg.step.evaluate
    requests = workload(int(settings.per_kind), int(cfg.seed), int(cfg.step.classifier.per_kind))
    scored = [r for r in requests if r.kind in SCORED_KINDS]
    max_tokens = int(settings.max_tokens)
    api = f"{url}/v1"
    started = time.perf_counter()
    log.info("orchestrate: evaluating on %d requests (%d scored)", len(requests), len(scored))

    # 1. Routing, and the gateway's answers.
    through = asyncio.run(ask_all(api, api_key, requests, "auto", max_tokens, 8))
    # the router's kind of each request, found once in one batched pass (routing and the replay)
    found_kinds = [kind for kind, _p, _how in router.kinds_of([r.text for r in requests])]
    skills = {name: tuple(b.spec.skills) for name, b in fleet.backends.items()}
    metrics: dict[str, float] = {
        "routing/kind_accuracy": mean([k == r.kind for k, r in zip(found_kinds, requests, strict=True)]),
        "routing/skilled_backend": mean(
            [a.get("backend") is not None and r.kind in skills.get(a["backend"], ())
             for a, r in zip(through, requests, strict=True)]
        ),
    }  # fmt: skip

    # 2. Accuracy: the gateway, each backend alone, oracle routing.
    right: dict[str, list[bool]] = {
        "gateway": [
            "text" in a and bool(answer_is_right(r, a["text"]))
            for a, r in zip(through, requests, strict=True)
            if r.kind in SCORED_KINDS
        ]
    }
    alone: dict[str, list[dict[str, Any]]] = {}
    for name in fleet.backends:
        alone[name] = asyncio.run(ask_all(api, api_key, scored, name, max_tokens, 8))
        right[name] = [
            "text" in a and bool(answer_is_right(r, a["text"]))
            for a, r in zip(alone[name], scored, strict=True)
        ]
    right["oracle"] = [any(right[n][i] for n in fleet.backends) for i in range(len(scored))]
    for name, marks in right.items():
        metrics[f"accuracy/{name}"] = mean(marks)
        for kind in SCORED_KINDS:
            kept = [m for m, r in zip(marks, scored, strict=True) if r.kind == kind]
            metrics[f"accuracy/{name}/{kind}"] = mean(kept)

    # 3. Latency and throughput: the best model backend directly, through the gateway, auto.
    models = [b for b in fleet.backends.values() if isinstance(b, ModelBackend)]
    best = max(models, key=lambda b: metrics[f"accuracy/{b.name}"]) if models else None
    latency_rows = []
    count = int(settings.latency_requests)
    mixed = [requests[i % len(requests)] for i in range(count)]
    for level in settings.concurrency:
        targets = [("gateway auto", api, "auto")]
        if best is not None:
            targets = [("direct " + best.name, best.base_url, best.model),
                       ("gateway " + best.name, api, best.name), *targets]  # fmt: skip
        for label, base, model in targets:
            began = time.perf_counter()
            answers = asyncio.run(ask_all(base, api_key if base == api else None, mixed, model,
                                          max_tokens, int(level)))  # fmt: skip
            wall = time.perf_counter() - began
            seconds = sorted(a["seconds"] for a in answers)
            tokens = sum(a.get("tokens", 0) for a in answers)
            row = {
                "target": label, "clients": int(level), "p50_s": percentile(seconds, 50),
                "p95_s": percentile(seconds, 95), "tokens_per_s": tokens / wall if wall else 0.0,
                "failed": sum("error" in a for a in answers),
            }  # fmt: skip
            latency_rows.append(row)
            key = label.split()[0] if label != "gateway auto" else "auto"
            key = {"direct": "direct", "gateway": "gateway"}.get(key, key)
            for field in ("p50_s", "p95_s", "tokens_per_s"):
                metrics[f"latency/{key}/c{level}/{field}"] = float(row[field])
    for level in settings.concurrency:
        direct = metrics.get(f"latency/direct/c{level}/p50_s")
        via = metrics.get(f"latency/gateway/c{level}/p50_s")
        if direct and via:
            metrics[f"latency/overhead_ratio/c{level}"] = via / direct

    # 4. The bandit, replayed on what each backend answered.
    scored_kinds = [k or "unknown" for k, r in zip(found_kinds, requests, strict=True)
                    if r.kind in SCORED_KINDS]  # fmt: skip
    curve, bandit_metrics = bandit_replay(
        run, scored_kinds, right, list(fleet.backends), int(settings.bandit_rounds), int(cfg.seed)
    )
    metrics |= bandit_metrics
    metrics["evaluation_s"] = time.perf_counter() - started

    # 5. What was answered, and the report.
    lines = []
    for r, a, k in zip(requests, through, found_kinds, strict=True):
        record = {"kind": r.kind, "found_kind": k, "text": r.text, "expected": r.answer, **a}
        record["right"] = answer_is_right(r, a.get("text", "")) if "text" in a else False
        lines.append(json.dumps(record, ensure_ascii=False, default=str))
    answers_path = run.add_output(run.path("evaluation", "answers.jsonl"))
    answers_path.write_text("\n".join(lines) + "\n")
    write_report(run, cfg, metrics, right, scored, latency_rows, curve, list(fleet.backends))
    return metrics


def bandit_replay(
    run: Any,
    kinds: list[str],
    right: dict[str, list[bool]],
    names: list[str],
    rounds: int,
    seed: int,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Thompson sampling over `names` on the scored requests (of the router's `kinds`), drawn
    at random, each choice rewarded
    with whether that backend answered that request right: the share of rounds (in windows)
    answered right, and in which it picked the backend that is best for the request's kind
    (counted for kinds with one best backend only)."""
    from quark.orchestrate.outcomes import Outcomes

    if not rounds or not kinds:
        return {}, {}
    # the best backend of a kind, where one is better than every other (a tie has none)
    best: dict[str, str | None] = {}
    for kind in set(kinds):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        score = {n: sum(right[n][i] for i in rows) for n in names}
        top = max(score.values())
        leaders = [n for n in names if score[n] == top]
        best[kind] = leaders[0] if len(leaders) == 1 else None
    path = run.path("evaluation", "bandit_replay.sqlite")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    picked_best, rewarded = [], []
    with Outcomes(path) as replay:
        for _round in range(rounds):
            i = rng.randrange(len(kinds))
            chosen, _scores = replay.choose(kinds[i], names, "thompson", rng)
            success = right[chosen][i]
            replay.record(chosen, kinds[i], success)
            if best[kinds[i]] is not None:
                picked_best.append(chosen == best[kinds[i]])
            rewarded.append(success)
    path.unlink(missing_ok=True)

    def windows(values: list[bool]) -> list[float]:
        size = max(len(values) // 10, 1)
        return [mean(values[s : s + size]) for s in range(0, len(values), size)]

    curve = {"accuracy": windows(rewarded)}
    metrics = {
        "bandit/accuracy_first": mean(rewarded[: max(rounds // 4, 1)]),
        "bandit/accuracy_last": mean(rewarded[-max(rounds // 4, 1) :]),
    }
    if picked_best:  # rounds of kinds with one best backend
        curve["best_choice"] = windows(picked_best)
        tail = max(len(picked_best) // 4, 1)
        metrics["bandit/best_choice_first"] = mean(picked_best[:tail])
        metrics["bandit/best_choice_last"] = mean(picked_best[-tail:])
    return curve, metrics


def write_report(
    run: Any,
    cfg: Any,
    metrics: dict[str, float],
    right: dict[str, list[bool]],
    scored: list[Any],
    latency_rows: list[dict[str, Any]],
    curve: dict[str, list[float]],
    names: list[str],
) -> None:
    from quark.eval.report import Report, write_html

    accuracy_rows = [
        [name, metrics[f"accuracy/{name}"],
         *(metrics[f"accuracy/{name}/{kind}"] for kind in SCORED_KINDS)]
        for name in right
    ]  # fmt: skip
    plots: dict[str, Path] = {}
    if curve:
        plots["The bandit's choices as rounds go by (replayed on the evaluated answers)"] = (
            bandit_plot(curve, run.path("evaluation", "bandit.png"))
        )
    report = Report(
        title="Gateway evaluation",
        subtitle=f"router {cfg.router.name}; backends {', '.join(names)}; "
        f"{len(scored)} scored requests",
        metrics={k: round(v, 4) for k, v in metrics.items()},
        tables={
            "End-to-end accuracy (arithmetic, code and docs requests)": (
                ["", "all", *SCORED_KINDS],
                accuracy_rows,
            ),
            "Latency and throughput": (
                ["target", "clients", "p50 s", "p95 s", "tokens/s", "failed"],
                [
                    [
                        r["target"],
                        r["clients"],
                        r["p50_s"],
                        r["p95_s"],
                        r["tokens_per_s"],
                        r["failed"],
                    ]
                    for r in latency_rows
                ],
            ),
        },
        plots=plots,
    )
    write_html(run.add_output("report.html"), report)


def bandit_plot(curve: dict[str, list[float]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3))
    for label, values in curve.items():
        axis.plot(range(1, len(values) + 1), values, marker="o", label=label.replace("_", " "))
    axis.set_xlabel("window of rounds")
    axis.set_ylim(0, 1.05)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def mean(values: list[bool] | list[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))
    return float(sorted_values[index])
