"""The generated labelled requests: templates split so that val and test phrasings are never
trained on, every category in every split, seeded, and no text twice."""

from __future__ import annotations

import pytest

from quark.core.errors import ConfigError
from quark.safety.requests import (
    BENIGN,
    TEMPLATES,
    UNSAFE_TASKS,
    generated_splits,
    template_splits,
)

COUNTS = {"train": 1500, "val": 300, "test": 300}


def test_templates_are_split_three_ways_without_overlap() -> None:
    groups = template_splits(0.2, seed=7)
    assert [len(groups[s]) for s in ("train", "val", "test")] == [18, 6, 6]
    assert sorted(groups["train"] + groups["val"] + groups["test"]) == list(range(len(TEMPLATES)))
    assert template_splits(0.2, seed=7) == groups and template_splits(0.2, seed=8) != groups


def test_each_split_uses_only_its_templates_and_holds_every_label() -> None:
    splits = generated_splits(COUNTS, 0.2, seed=7)
    groups = template_splits(0.2, seed=7)
    for split, requests in splits.items():
        assert len(requests) == COUNTS[split]
        assert {r.template for r in requests} <= set(groups[split])
        assert {r.label for r in requests} == {BENIGN, *UNSAFE_TASKS}
        assert len({r.text for r in requests}) == len(requests)
    # the phrasing of a held-out template never appears in train
    train = {r.text for r in splits["train"]}
    for index in groups["test"]:
        opening = TEMPLATES[index].split("{task}")[0]
        assert opening and not any(t.startswith(opening) or f" {opening}" in t for t in train), (
            opening
        )


def test_generation_is_seeded() -> None:
    first, again = generated_splits(COUNTS, 0.2, 3), generated_splits(COUNTS, 0.2, 3)
    assert first == again
    assert generated_splits(COUNTS, 0.2, 4)["train"] != first["train"]


def test_a_share_leaving_nothing_to_train_on_is_refused() -> None:
    assert len(template_splits(0.49, seed=0)["train"]) == 2
    with pytest.raises(ConfigError, match=r"^data\.task\.held_out_templates: .* at most 0\.467$"):
        template_splits(0.5, seed=0)


def test_a_split_smaller_than_its_templates_make_still_holds_every_template() -> None:
    splits = generated_splits({"train": 100, "val": 60, "test": 60}, 0.2, seed=7)
    groups = template_splits(0.2, seed=7)
    for split, requests in splits.items():
        assert {r.template for r in requests} == set(groups[split]), split
        assert {r.label for r in requests} == {BENIGN, *UNSAFE_TASKS}, split
