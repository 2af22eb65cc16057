"""Step 10's parts: one governed improvement cycle (quark.steps.improve reads top to bottom).

failures.py   what the production model gets wrong: wrong answers, red-team bypasses,
              its highest-loss validation windows
kinds.py      the kind of an arithmetic question (operators, digits, terms): what fails
augment.py    data aimed at the failures: new examples of the failing kinds; documents
              retrieved as similar to the high-loss windows
children.py   the cycle's own runs (data is written here; finetune and evaluate are runs of
              their steps, each in its own run directory, reused when nothing changed)
goal.py       the next target, chosen from the measured gaps, and its budget
"""
