"""Helpers shared by every ``posegen`` command: the console, progress display, verbosity and error handling.

The command modules (:mod:`cli.app`, :mod:`cli.augment`, :mod:`cli.repose`, ...) import from here;
this module imports no command module, so imports go one way: ``app -> commands -> common``.

Progress goes to stderr. On a terminal it is a Rich progress display (bars with count, rate and
ETA); when stderr is not a terminal (CI, ``nohup``, a cluster job's log file) it is plain log lines,
``<stage> <done>/<total> <pct>% <rate>/s ETA <h:mm:ss>``, printed every :data:`LOG_EVERY_S`
seconds or every :data:`LOG_EVERY_FRACTION` of the stage (but not more often than every
:data:`LOG_MIN_GAP_S` seconds, so a one-second stage prints its start and end only), and when a
stage finishes. ``--quiet`` prints no progress (errors and the final summary still print); ``--verbose``
also shows native library log lines and full tracebacks of errors.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = [
    "console", "progress_display", "plain_progress", "clear_errors", "fail", "set_verbosity", "verbosity",
    "LOG_EVERY_S", "LOG_EVERY_FRACTION",
]  # fmt: skip

#: The shared stderr console (results tables and errors; stdout stays free for data).
console = Console(stderr=True)

#: Plain progress lines: at most one per stage every this many seconds ...
LOG_EVERY_S = 10.0
#: ... or whenever the stage advanced by this fraction of its total ...
LOG_EVERY_FRACTION = 0.05
#: ... but never two periodic lines of a stage closer than this many seconds.
LOG_MIN_GAP_S = 2.0

#: Units of the progress stages (for rates).
UNITS = {"poses": "img", "train": "step", "copy": "img", "generate": "img", "repose": "img", "encode": "img"}

_STATE = {"quiet": False, "verbose": False}


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    """Set the process-wide verbosity of the CLI (``--quiet`` / ``--verbose``).

    ``verbose`` also lets native (mediapipe/absl/TFLite) log lines through
    (:func:`posegen.pose.native_logs.set_verbose`).

    Raises:
        typer.BadParameter: both ``quiet`` and ``verbose``.
    """
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose cannot be combined")
    _STATE.update(quiet=bool(quiet), verbose=bool(verbose))
    from posegen.pose.native_logs import set_verbose

    set_verbose(bool(verbose))


def verbosity() -> str:
    """``"quiet"``, ``"verbose"`` or ``"normal"``."""
    return "quiet" if _STATE["quiet"] else "verbose" if _STATE["verbose"] else "normal"


class _Rate(TextColumn):
    """Items per second of a task."""

    def __init__(self):
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text("" if speed is None else f"{speed:.2f} {unit}/s", style="progress.data.speed")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def plain_progress(
    write: Callable[[str], None],
    *,
    every_s: float = LOG_EVERY_S,
    every_fraction: float = LOG_EVERY_FRACTION,
    min_gap_s: float = LOG_MIN_GAP_S,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[str, int, int], None]:
    """A progress callback ``update(stage, done, total)`` that writes plain log lines.

    A line ``"<stage> <done>/<total> <pct>% <rate> <unit>/s ETA <h:mm:ss>"`` is written for a
    stage's first update, when it finishes (``done == total``), and otherwise once per ``every_s``
    seconds or per ``every_fraction`` of ``total`` done, never two within ``min_gap_s`` seconds. The rate counts items done
    since the stage's first update (items resumed from a previous run do not inflate it).

    Args:
        write: receives each line (without a newline).
        every_s: seconds between two periodic lines of a stage.
        every_fraction: fraction of the total between two periodic lines of a stage.
        min_gap_s: the least seconds between two periodic lines of a stage.
        clock: time source in seconds (injectable for tests).
    """
    stages: dict[str, dict] = {}

    def update(stage: str, done: int, total: int) -> None:
        now = clock()
        st = stages.get(stage)
        if st is None:
            st = stages[stage] = dict(t0=now, n0=done, last_t=None, last_n=None, finished=False)
        finished = total > 0 and done >= total
        if st["last_t"] is not None:
            if finished and st["finished"]:
                return
            gap = now - st["last_t"]
            due = gap >= every_s or (gap >= min_gap_s and total > 0 and (done - st["last_n"]) >= every_fraction * total)
            if not (due or finished):
                return
        st.update(last_t=now, last_n=done, finished=finished)
        dt, dn = now - st["t0"], done - st["n0"]
        unit = UNITS.get(stage, "it")
        rate = dn / dt if dt > 0 and dn > 0 else None
        pct = f" {100.0 * done / total:.0f}%" if total > 0 else ""
        rate_s = f" {rate:.2f} {unit}/s" if rate else ""
        if finished:
            eta = f" done in {_hms(dt)}"
        elif rate:
            eta = f" ETA {_hms((total - done) / rate)}"
        else:
            eta = ""
        write(f"{stage} {done}/{total}{pct}{rate_s}{eta}")

    return update


@contextmanager
def progress_display() -> Iterator[Callable[[str, int, int], None]]:
    """Progress for a command; yields ``update(stage, done, total)``.

    Rich bars (count, rate, elapsed time, ETA) when stderr is a terminal; plain periodic log lines
    (:func:`plain_progress`) when it is not; nothing with ``--quiet``.
    """
    if _STATE["quiet"]:
        yield lambda stage, done, total: None
        return
    if not console.is_terminal:
        def write(line: str) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

        yield plain_progress(write)
        return
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    tasks: dict[str, int] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bars.add_task(name, total=total, completed=done, unit=UNITS.get(name, "it"))
        bars.update(tasks[name], completed=done, total=total)

    with bars:
        yield update


def fail(message: str) -> None:
    """Print ``error: <message>`` on one line (never wrapped) and exit with status 2."""
    console.print(Text.assemble(("error:", "red"), " ", str(message)), soft_wrap=True, highlight=False)
    raise typer.Exit(2)


@contextmanager
def clear_errors():
    """Turn the library's documented errors into one clear line and exit status 2.

    Caught: layout, recipe, output-folder and image errors, ``FileNotFoundError``, ``ValueError``
    and other ``OSError`` (permission denied, not a directory, ...). With ``--verbose`` the
    traceback is printed too.
    """
    from posegen.augment import OutputDirError
    from posegen.data import ImageReadError, LayoutError
    from posegen.recipe import RecipeError

    try:
        yield
    except (LayoutError, RecipeError, OutputDirError, ImageReadError, FileNotFoundError, ValueError, OSError) as e:
        if _STATE["verbose"]:
            console.print_exception()
        msg = str(e)
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.strerror:
            msg = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        fail(" ".join(msg.split()) if "\n" not in msg.strip() else msg.strip())


def pose_backend(name: str, weights: str | None = None, **options):
    """Create the pose backend ``name`` (see :func:`posegen.pose.backends.get_backend`), printing
    its warnings (e.g. ``auto`` falling back to BlazePose when the MoveNet file is missing) as one
    ``note:`` line each instead of Python's warning format. Errors propagate unchanged."""
    import warnings

    from posegen.pose.backends import get_backend

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        backend = get_backend(name, weights, **options)
    for w in caught:
        console.print(f"[yellow]note:[/yellow] {w.message}", highlight=False)
    return backend
