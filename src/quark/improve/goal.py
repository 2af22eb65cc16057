"""The next goal (pillar 20): from the gaps measured at the end of a cycle, the kind of task the
next cycle's starting model is weakest at, what to aim for on it, and the budget the next cycle
gets.

The weakest kind is the one with the lowest accuracy among kinds asked often enough to measure
(`min_asked`); ties go to the kind asked most. The aim is half the gap to perfect (a record for
the reader: a cycle stops on max_cycles, the time budget or no wrong answers, not on the aim).
The budget grows with the gap: steps up to `max_steps`, new examples up to twice `base_new`.
A refused candidate doubles the steps of the cycle that trained it (up to `max_steps`): it was
given too little to move the gate.
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
    accuracy_by_kind: dict[str, float], asked_by_kind: dict[str, int], *, steps_used: int,
    base_steps: int, max_steps: int, base_new: int, promoted: bool, min_asked: int = 3,
) -> Goal:  # fmt: skip
    refused = "" if promoted else f"; the candidate was refused: twice its {steps_used} steps"
    steps = min(max_steps, 2 * steps_used) if not promoted else base_steps
    measured = {k: a for k, a in accuracy_by_kind.items() if asked_by_kind.get(k, 0) >= min_asked}
    if not measured:
        return Goal(None, None, None, steps, base_new,
                    "no kind was asked often enough to measure" + refused)  # fmt: skip
    kind = min(measured, key=lambda k: (measured[k], -asked_by_kind[k], k))
    accuracy = measured[kind]
    gap = 1.0 - accuracy
    if promoted:
        steps = min(max_steps, round(base_steps * (1.0 + gap)))
    return Goal(
        kind=kind,
        accuracy=round(accuracy, 4),
        aim=round(accuracy + gap / 2, 4),
        steps=steps,
        max_new=round(base_new * (1.0 + gap)),
        why=f"weakest kind '{kind}': {accuracy:.3f} on {asked_by_kind[kind]} questions" + refused,
    )
