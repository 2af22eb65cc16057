"""`launch.py --help` against a bare Hydra app of the same size, in one session.

The bare app composes a copy of the same conf/ tree and does nothing else, so the ratio is what
Quark adds on top of Hydra itself. Runs alternate to share any drift in machine load.
Targets (issue 2): ratio <= 2, median --help under 1 s.

    .venv/bin/python bench/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BARE_APP = """
import hydra
from omegaconf import OmegaConf

# the same resolvers, so the copied conf/ composes; nothing else of Quark is imported
OmegaConf.register_new_resolver("quark.new_run_dir", lambda parent: parent)
OmegaConf.register_new_resolver("quark.latest", lambda step: step)


@hydra.main(version_base="1.3", config_path="conf", config_name="launch")
def main(cfg):
    pass


if __name__ == "__main__":
    main()
"""


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp)
        shutil.copytree(REPO / "conf", bare / "conf")
        (bare / "app.py").write_text(BARE_APP)
        quark_argv = [sys.executable, "launch.py", "--help"]
        bare_argv = [sys.executable, "app.py", "--help"]
        timed(quark_argv, REPO), timed(bare_argv, bare)  # warm the file cache
        quark_times, bare_times = [], []
        for _ in range(args.runs):
            quark_times.append(timed(quark_argv, REPO))
            bare_times.append(timed(bare_argv, bare))
    quark_median, bare_median = statistics.median(quark_times), statistics.median(bare_times)
    ratio = quark_median / bare_median
    print(f"runs: {args.runs} alternating")
    print(f"bare hydra app --help: median {bare_median:.3f} s")
    print(f"quark launch.py --help: median {quark_median:.3f} s")
    print(f"ratio: {ratio:.2f} (target <= 2); median under 1 s: {quark_median < 1.0}")


if __name__ == "__main__":
    main()
