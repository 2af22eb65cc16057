"""trainer.cache_host_memory: after cache_host_memory(), a CPU training step reuses the memory
the previous step freed instead of faulting in fresh pages from the kernel (the cost it removes:
7-12 % of a step, bench/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from quark.training.host_memory import glibc

from ..conftest import REPO

# a language-model head's training step on the CPU (2048 tokens, vocabulary 8192: 64 MB logits
# and as much again for their gradient), 15 steps for the heap to grow to what a step needs, then
# the minor page faults per step over 5 more. In a fresh process: cache_host_memory changes the process for good.
STEPS = """
import resource, sys, torch
from quark.training.host_memory import cache_host_memory
if sys.argv[1] == "cached":
    assert cache_host_memory()
head = torch.nn.Linear(256, 8192)
hidden = torch.randn(2048, 256, requires_grad=True)
targets = torch.randint(0, 8192, (2048,))
def step():
    torch.nn.functional.cross_entropy(head(hidden), targets).backward()
    head.zero_grad(set_to_none=True)
    hidden.grad = None
for _ in range(15):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def page_faults_per_step(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", STEPS, mode], cwd=REPO, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    glibc() is None,
    reason="not glibc: cache_host_memory works through glibc's mallopt and by design does nothing elsewhere",
)
def test_a_training_step_reuses_freed_memory_instead_of_faulting_in_new_pages() -> None:
    logits_pages = 64 * 2**20 // 4096
    # glibc's default: each large tensor is a fresh mmap, its pages faulted in on every step
    default = page_faults_per_step("default")
    assert default > 2 * logits_pages
    # measured 65,540 against 0: the heap grew for the first 10 steps, then every block is reused
    assert page_faults_per_step("cached") < default / 10
