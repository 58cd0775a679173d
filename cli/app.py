"""The ``posegen`` command line: a thin Typer layer over the library.

Each command parses options, calls one library function and renders progress and tables with
Rich. No pipeline logic lives here.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Optional

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
from rich.table import Table
from rich.text import Text

from posegen.pose.backends import BACKENDS, DEFAULT_BACKEND

from .augment import augment_cmd, filter_cmd
from .downstream import eval_downstream_cmd
from .repose import repose_cmd

app = typer.Typer(
    name="posegen",
    help="Multiply person re-ID and fashion datasets with pose-guided diffusion (offline).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


class _Rate(TextColumn):
    """Items per second of a task."""

    def __init__(self):
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text("" if speed is None else f"{speed:.2f} {unit}/s", style="progress.data.speed")


@contextmanager
def _progress():
    """A Rich progress display with count, rate, elapsed time and ETA; yields ``update(name, done, total)``."""
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
    units = {"poses": "img", "train": "step", "copy": "img", "generate": "img", "repose": "img", "encode": "img"}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bars.add_task(name, total=total, completed=done, unit=units.get(name, "it"))
        bars.update(tasks[name], completed=done, total=total)

    with bars:
        yield update


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@contextmanager
def _clear_errors():
    """Turn the library's documented errors into one clear line and exit status 2."""
    from posegen.augment import OutputDirError
    from posegen.data import LayoutError
    from posegen.recipe import RecipeError

    try:
        yield
    except (LayoutError, RecipeError, OutputDirError, FileNotFoundError, ValueError) as e:
        _fail(str(e))


#: ``--backend`` choices of extract-poses: every registered pose backend
PoseBackendName = Enum("PoseBackendName", {name: name for name in BACKENDS}, type=str)


@app.command("extract-poses")
def extract_poses_cmd(
    data: Path = typer.Argument(..., help="Dataset folder (Market-1501, CUHK03, or one sub-folder per identity)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .parquet (default), .csv (Pose-Transfer) or .json (COCO)."),
    layout: Optional[str] = typer.Option(None, help="Force a layout: market1501, cuhk03 or generic."),
    backend: PoseBackendName = typer.Option(
        DEFAULT_BACKEND,
        help="Pose backend: blazepose (BlazePose full, weights bundled with mediapipe) or one that needs --weights "
        "(movenet is the most accurate per second on small crops: benchmarks/results/pose_gt.md).",
    ),
    weights: Optional[str] = typer.Option(None, help="Local weights file for backends that need one."),
    limit: Optional[int] = typer.Option(None, help="Only the first N images (sorted by path)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show the native mediapipe / absl / TFLite log lines."),
):
    """Estimate COCO-17 keypoints for every image of DATA (resumable: a re-run skips done images)."""
    from posegen.data import load_dataset
    from posegen.pose.backends import get_backend
    from posegen.pose.extract import extract_poses, pose_summary
    from posegen.pose.native_logs import set_verbose

    set_verbose(verbose)
    backend = backend.value if isinstance(backend, PoseBackendName) else str(backend)
    with _clear_errors():
        if out.suffix.lower() not in (".parquet", ".csv", ".json"):
            out = out.with_suffix(out.suffix + ".parquet") if out.suffix else out.with_suffix(".parquet")
        manifest = load_dataset(data, layout)
        if limit is not None:
            manifest = manifest.head(limit)
        t0 = time.perf_counter()
        with get_backend(backend, weights) as be, _progress() as update:
            poses = extract_poses(manifest, data, be, out=out, progress=lambda d, t: update("poses", d, t))
        dt = time.perf_counter() - t0
    s = pose_summary(poses)
    table = Table(title=f"poses -> {out}")
    for col in ("images", "ok", "failed", "mean confident kp", ">= 12 kp", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(
        str(s["images"]), str(s["ok"]), str(s["failed"]), f"{s['mean_confident']:.1f}",
        f"{100 * s['share_ge12']:.0f}%", f"{dt:.1f}",
    )  # fmt: skip
    console.print(table)
    for reason, n in s["failed_by_reason"].items():
        console.print(f"  failed: {reason}: {n}")


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder."),
    poses: Path = typer.Option(..., "--poses", help="Keypoints file from extract-poses (.parquet/.csv/.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (resumes if it has checkpoints)."),
    recipe: str = typer.Option("tiny", help="Recipe name (default, tiny, cuhk03) or YAML path; 'default' trains posegen's default model family (warp + latent repair)."),
    layout: Optional[str] = typer.Option(None, help="Force a layout."),
    steps: Optional[int] = typer.Option(None, help="Override the recipe's training steps."),
):
    """Train the re-posing model on pairs of images of the same identity."""
    from posegen.data import load_dataset
    from posegen.pose.formats import read_poses
    from posegen.recipe import load_recipe
    from posegen.repose import train

    with _clear_errors():
        rec = load_recipe(recipe)
        manifest = load_dataset(data, layout)
        pose_df = read_poses(poses)
        t0 = time.perf_counter()
        with _progress() as update:
            if rec.latent is not None:  # posegen's default model family (warp + latent repair)
                from posegen.repose.latent_train import train_latent_recipe

                model_dir = train_latent_recipe(rec, data, pose_df, out, steps=steps, layout=layout, progress=update)
            else:
                model_dir = train(rec, manifest, pose_df, data, out, steps=steps, progress=lambda s, t, logs: update("train", s, t))
    console.print(f"model: {model_dir}  ({time.perf_counter() - t0:.0f} s); loss log: {out / 'loss.csv'}")


app.command("repose")(repose_cmd)
app.command("augment")(augment_cmd)
app.command("filter")(filter_cmd)
app.command("eval-downstream")(eval_downstream_cmd)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: re-run with --resume to continue")
        sys.exit(130)


if __name__ == "__main__":
    main()
