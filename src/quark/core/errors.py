"""Errors a user can fix, and the one place that turns any error into a clean exit.

Bad input ends with one line on stderr naming the key or file, what was wrong and what is
allowed, exit status 2, and no traceback unless QUARK_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


class QuarkError(Exception):
    """Bad input the user can fix: a key or file, what is wrong, what is allowed."""


class ConfigError(QuarkError):
    """A config value that is missing, unknown, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str, allowed: str | None = None) -> None:
        key = override_key(key)
        self.key = key
        self.problem = problem
        self.allowed = allowed
        message = f"{key}: {problem}" + (f"; {allowed}" if allowed else "")
        super().__init__(message)


def override_key(key: str) -> str:
    """A config key as the command line writes it: OmegaConf's `a.b[0].c` is `a.b.0.c`."""
    import re

    return re.sub(r"\[(\d+)\]", r".\1", str(key))


def debug_enabled() -> bool:
    return os.environ.get("QUARK_DEBUG", "") not in ("", "0", "false")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def bad_input_message(exc: BaseException) -> str | None:
    """The one-line message for bad input, or None when `exc` is a bug rather than bad input.

    Hydra and OmegaConf wrap errors (composition, interpolation): the first QuarkError in the
    cause chain wins, then Hydra's and OmegaConf's own config errors are rewritten.
    """
    chain: list[BaseException] = []
    cursor: BaseException | None = exc
    while cursor is not None and cursor not in chain:
        chain.append(cursor)
        cursor = cursor.__cause__ or cursor.__context__
    for err in chain:
        if isinstance(err, QuarkError):
            return one_line(str(err))
    from quark.core.hydra_errors import describe_hydra_error  # light: hydra is imported already

    for err in chain:
        message = describe_hydra_error(err)
        if message is not None:
            return message
    return None


# Errors raised inside Hydra's task function, kept here so Hydra does not print its own
# report; `exit_cleanly` reports them once Hydra returns (in a sweep, the other jobs still run).
_task_failures: list[BaseException] = []


def reported_by_exit_cleanly(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap Hydra's task function so its errors reach `exit_cleanly` instead of Hydra."""
    import functools

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as exc:
            if debug_enabled():
                traceback.print_exc()
            _task_failures.append(exc)
            return None

    return wrapper


def exit_cleanly(entry: Callable[[], Any]) -> NoReturn:
    """Run a command; bad input exits 2 with one line, a bug exits 1 with a pointer to QUARK_DEBUG."""
    # Hydra prints its own multi-line report and exits 1 unless HYDRA_FULL_ERROR is set;
    # with it set, the exception reaches us and we decide how to report it.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    skip_the_last_garbage_collection()
    try:
        entry()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # `launch.py --help | head`: the reader left; say nothing more (Python's own advice).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except BaseException as exc:
        if debug_enabled():
            traceback.print_exc()
        sys.exit(report(exc))
    statuses = [report(exc) for exc in _task_failures]
    sys.exit(max(statuses, default=0))


def skip_the_last_garbage_collection() -> None:
    """Leave every object alive at exit out of the interpreter's last garbage collections.

    Python's shutdown collects garbage over every object still alive: after a training step
    (torch, transformers, Lightning and their modules in memory) that took 1.5 s of a 2-core
    machine, on every command. gc.freeze, as the last exit handler (atexit runs its handlers last
    in, first out; this one is registered first), moves them all out of the collector's reach;
    the operating system reclaims their memory. Exit handlers, which flush and close what
    libraries hold open, run before it as always; only the __del__ of objects in reference
    cycles is skipped, which Python does not promise to run at exit either.
    """
    import atexit
    import gc

    atexit.unregister(gc.freeze)  # once, however many commands one process runs
    atexit.register(gc.freeze)


def report(exc: BaseException) -> int:
    """Print one line for `exc` on stderr; return the exit status it calls for."""
    message = bad_input_message(exc)
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    failed = _find(exc, StepFailed)
    if failed is not None:
        print(f"error: {one_line(str(failed))}", file=sys.stderr)
        return EXIT_INTERNAL
    print(
        f"internal error: {type(exc).__name__}: {one_line(str(exc))} "
        "(set QUARK_DEBUG=1 for the traceback)",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


class RunStopped(Exception):
    """A run stopped on purpose before its end, e.g. an HPO trial its pruner cut short: the
    manifest records `pruned`, the command does not fail, no traceback."""


class StepFailed(Exception):
    """A step that started and failed at run time (not bad input): exit status 1, one line."""


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    cursor: BaseException | None = exc
    seen: list[BaseException] = []
    while cursor is not None and cursor not in seen:
        if isinstance(cursor, kind):
            return cursor
        seen.append(cursor)
        cursor = cursor.__cause__ or cursor.__context__
    return None
