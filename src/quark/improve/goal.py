"""The next goal (pillar 20): from the gaps measured at the end of a cycle, the kind of task the
production model is weakest at, what to reach on it, and the budget the next cycle gets.

The weakest kind is the one with the lowest accuracy among kinds asked often enough to measure
(`min_asked`); ties go to the kind asked most. The aim is half the gap to perfect; the budget
grows with the gap (more training steps, more new examples) and never past the step's limits.
A cycle whose candidate was refused keeps its goal and doubles the steps, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    kind: str | None  # None: nothing measured to aim at
    accuracy: float | None  # the production model's on that kind now
    aim: float | None
    steps: int  # retraining steps for the next cycle
    max_new: int  # new examples for the next cycle
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def next_goal(
    accuracy_by_kind: dict[str, float], asked_by_kind: dict[str, int], *, base_steps: int,
    max_steps: int, base_new: int, promoted: bool, previous: Goal | None = None,
    min_asked: int = 3,
) -> Goal:  # fmt: skip
    measured = {k: a for k, a in accuracy_by_kind.items() if asked_by_kind.get(k, 0) >= min_asked}
    if not measured:
        return Goal(
            None, None, None, base_steps, base_new, "no kind was asked often enough to measure"
        )
    kind = min(measured, key=lambda k: (measured[k], -asked_by_kind[k], k))
    accuracy = measured[kind]
    gap = 1.0 - accuracy
    steps = min(max_steps, round(base_steps * (1.0 + gap)))
    why = f"weakest kind '{kind}': {accuracy:.3f} on {asked_by_kind[kind]} questions"
    if not promoted and previous is not None and previous.kind == kind:
        steps = min(max_steps, 2 * previous.steps)
        why += "; the last candidate was refused on this kind, so twice its steps"
    return Goal(
        kind=kind,
        accuracy=round(accuracy, 4),
        aim=round(accuracy + gap / 2, 4),
        steps=steps,
        max_new=round(base_new * (1.0 + gap)),
        why=why,
    )
