"""`warm_start.source: auto`: a new study starts from the earlier studies of similar runs.

When the study is created, the similar studies under `paths.output_dir` are found
(similar_studies.py); their completed trials of runs like this sweep's are pooled, best first,
fitted to this search space and deduplicated; the best `warm_start.trials` are enqueued, and
with `warm_start.narrow` every range is narrowed to where the best `warm_start.narrow_top` lie
(narrowing.py), categoricals too with `warm_start.narrow_choices`. The narrowed space is
recorded in the study, so every rerun searches it too. Which studies were used, and why, goes
to the log and to warm_start.json in the sweep dir. No similar study: a cold start, not an error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from quark.core.files import write_json_atomic
from quark.hpo.narrowing import describe, fit_to_space, narrow_space
from quark.hpo.settings import StudySettings
from quark.hpo.similar_studies import (
    EarlierTrial,
    SweepProfile,
    find_earlier_studies,
    sweep_profile,
)
from quark.hpo.study import WARM_START_ATTR

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger("quark.hpo")
WARM_START_FILE = "warm_start.json"
# a study attribute: the studies it started from and its narrowed distributions (as JSON)
AUTO_ATTR = "warm_start_auto"


def auto_warm_start(
    study: optuna.Study,
    settings: StudySettings,
    space: dict[str, BaseDistribution],
    config: Any,
    sweep_dir: Path,
) -> dict[str, BaseDistribution]:
    """Warm-start a new study from the similar earlier studies (see the module); return the
    space its sampler searches. That is `space` itself on a cold start, with narrow: false, and
    for a study that already holds trials (decided when it started, or started without auto)."""
    if AUTO_ATTR in study.user_attrs:
        log.info("warm start: auto: decided when the study started (%s)", WARM_START_FILE)
        return space
    if study.get_trials(deepcopy=False):
        log.info(
            "warm start: auto: the study '%s' already holds trials started without it; "
            "its search space stays as configured",
            study.study_name,
        )
        return space
    warm = settings.warm_start
    profile = sweep_profile(config, settings.objective, settings.direction, space)
    output_dir = Path(str(OmegaConf.select(config, "paths.output_dir"))).resolve()
    log.info(
        "warm start: auto: studies like this one (%s) under %s", profile.describe(), output_dir
    )
    studies = find_earlier_studies(output_dir, profile, (settings.storage, settings.study_name))
    pooled = [trial for earlier in studies if earlier.similar for trial in earlier.trials]
    ranked = best_distinct(pooled, space, maximize=settings.direction == "maximize")
    enqueued = ranked[: warm.trials]
    for params, trial in enqueued:
        study.enqueue_trial(params, user_attrs={WARM_START_ATTR: trial.source})
    narrowed = space
    if ranked and warm.narrow:
        best = [params for params, _ in ranked[: max(warm.narrow_top, warm.trials)]]
        narrowed = narrow_space(space, best, warm.margin, warm.narrow_choices)
    changed = {key: d for key, d in narrowed.items() if d != space[key]}
    used = [f"{e.storage}#{e.name}" for e in studies if e.similar]
    study.set_user_attr(AUTO_ATTR, {"studies": used, "narrowed": _to_json(changed)})
    record = {
        "source": "auto",
        "cold_start": not ranked,
        "looked_for": {"output_dir": str(output_dir), **_profile_json(profile)},
        "studies": [
            {
                "study": e.name,
                "storage": e.storage,
                "used": e.similar,
                "reason": e.reason,
                "trials": len(e.trials),
            }
            for e in studies
        ],
        "enqueued": [{"params": p, "value": t.value, "from": t.source} for p, t in enqueued],
        "narrow": {
            "enabled": warm.narrow,
            "top": warm.narrow_top,
            "margin": warm.margin,
            "choices": warm.narrow_choices,
        },
        "ranges": {
            k: {"before": describe(d), "after": describe(narrowed[k])} for k, d in space.items()
        },
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(sweep_dir / WARM_START_FILE, record)
    _log_record(record, len(ranked))
    return narrowed


def _log_record(record: dict[str, Any], distinct: int) -> None:
    for earlier in record["studies"]:
        log.info(
            "warm start: auto: %s study '%s' (%s): %s",
            "using" if earlier["used"] else "not using",
            earlier["study"],
            earlier["storage"],
            earlier["reason"],
        )
    if record["cold_start"]:
        where = record["looked_for"]["output_dir"]
        if any(earlier["used"] for earlier in record["studies"]):
            log.info(
                "warm start: auto: the similar studies' trials set no parameter searched here: a cold start"
            )
        else:
            log.info("warm start: auto: no similar earlier study under %s: a cold start", where)
        return
    log.info(
        "warm start: auto: %d trials enqueued, the best of %d distinct ones",
        len(record["enqueued"]),
        distinct,
    )
    for key, change in record["ranges"].items():
        if change["after"] != change["before"]:
            before, after = (_shown(change[k]) for k in ("before", "after"))
            log.info("warm start: auto: %s narrowed from %s to %s", key, before, after)


def best_distinct(
    trials: list[EarlierTrial], space: dict[str, BaseDistribution], maximize: bool
) -> list[tuple[dict[str, Any], EarlierTrial]]:
    """The trials best first, each with its parameters fitted to `space`; a parameter set met
    before (once fitted) and one with no parameter of the space are left out."""
    ranked, seen = [], set()
    for trial in sorted(trials, key=lambda t: t.value, reverse=maximize):
        params = fit_to_space(trial.params, space)
        key = json.dumps(sorted(params.items()), default=str)
        if params and key not in seen:
            seen.add(key)
            ranked.append((params, trial))
    return ranked


def study_space(
    study: optuna.Study, space: dict[str, BaseDistribution]
) -> dict[str, BaseDistribution]:
    """The space a study searches: `space`, with the ranges narrowed when it was warm-started
    automatically, each while it still lies within the configured one (a range changed since
    so that it does not is searched as now configured)."""
    from optuna.distributions import json_to_distribution

    recorded = (study.user_attrs.get(AUTO_ATTR) or {}).get("narrowed") or {}
    if recorded:
        log.info("searching the ranges narrowed when the study started (%s)", WARM_START_FILE)
    searched = dict(space)
    for key, text in recorded.items():
        if key not in space:
            continue
        narrowed = json_to_distribution(text)
        if _within(narrowed, space[key]):
            searched[key] = narrowed
        else:
            log.warning(
                "warm start: auto: %s was narrowed to %s, which no longer lies within %s; "
                "searching the configured range",
                key,
                describe(narrowed),
                describe(space[key]),
            )
    return searched


def _within(narrowed: BaseDistribution, configured: BaseDistribution) -> bool:
    from optuna.distributions import CategoricalDistribution

    if type(narrowed) is not type(configured):
        return False
    if isinstance(narrowed, CategoricalDistribution):
        return set(narrowed.choices) <= set(configured.choices)  # type: ignore[attr-defined]
    a, b = narrowed, configured
    return (
        a.log == b.log  # type: ignore[attr-defined]
        and a.step == b.step  # type: ignore[attr-defined]
        and b.low <= a.low <= a.high <= b.high  # type: ignore[attr-defined]
    )


def _shown(described: dict[str, Any]) -> str:
    """A described distribution in a log line: 0.0003..0.02 log, 0..30 step 10, [8, 16]."""
    if "choices" in described:
        return str(described["choices"])
    parts = [f"{described['low']:.4g}..{described['high']:.4g}"]
    if described.get("log"):
        parts.append("log")
    if "step" in described:
        parts.append(f"step {described['step']:g}")
    return " ".join(parts)


def _to_json(space: dict[str, BaseDistribution]) -> dict[str, str]:
    from optuna.distributions import distribution_to_json

    return {key: distribution_to_json(d) for key, d in space.items()}


def _profile_json(profile: SweepProfile) -> dict[str, Any]:
    return {
        "objective": profile.objective,
        "direction": profile.direction,
        **{a: profile.run.get(a) for a in profile.compared},
    }
