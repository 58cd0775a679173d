"""The ``posegen`` command line: a thin Typer layer over the library.

Each command parses options, calls one library function and renders progress and tables with
Rich. No pipeline logic lives here.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
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

from .downstream import eval_downstream_cmd

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
    units = {"poses": "img", "train": "step", "copy": "img", "generate": "img", "repose": "img"}

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


@app.command("extract-poses")
def extract_poses_cmd(
    data: Path = typer.Argument(..., help="Dataset folder (Market-1501, CUHK03, or one sub-folder per identity)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .parquet (default), .csv (Pose-Transfer) or .json (COCO)."),
    layout: Optional[str] = typer.Option(None, help="Force a layout: market1501, cuhk03 or generic."),
    backend: str = typer.Option("blazepose", help="Pose backend."),
    weights: Optional[str] = typer.Option(None, help="Local weights file for backends that need one."),
    limit: Optional[int] = typer.Option(None, help="Only the first N images (sorted by path)."),
):
    """Estimate COCO-17 keypoints for every image of DATA (resumable: a re-run skips done images)."""
    from posegen.data import load_dataset
    from posegen.pose.backends import get_backend
    from posegen.pose.extract import extract_poses, pose_summary

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
    recipe: str = typer.Option("tiny", help="Recipe name (tiny, cuhk03) or YAML path."),
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
            model_dir = train(rec, manifest, pose_df, data, out, steps=steps, progress=lambda s, t, logs: update("train", s, t))
    console.print(f"model: {model_dir}  ({time.perf_counter() - t0:.0f} s); loss log: {out / 'loss.csv'}")


@app.command("repose")
def repose_cmd(
    model: Path = typer.Option(..., "--model", help="A train run folder or its model/ folder."),
    source: Path = typer.Option(..., "--source", help="Source image of the person."),
    target_pose: Path = typer.Option(
        ..., "--target-pose", help="An image whose pose to copy, or a keypoints file (.parquet/.csv/.json)."
    ),
    target_name: Optional[str] = typer.Option(None, help="Row of the keypoints file to use (its path/name); default: the first ok row."),
    out: Path = typer.Option(..., "--out", "-o", help="Output PNG."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps (default: the model's)."),
    scheduler: str = typer.Option("ddim", help="Sampler: ddim, dpm++, unipc, euler, ddpm."),
    seed: int = typer.Option(0, help="Noise seed."),
    backend: str = typer.Option("blazepose", help="Pose backend for images without keypoints."),
):
    """Re-pose one image into a target pose."""
    from posegen.repose.single import repose_one

    with _clear_errors():
        info = repose_one(
            model, source, target_pose, out, target_name=target_name, steps=steps,
            scheduler=scheduler, seed=seed, backend=backend,
        )  # fmt: skip
    console.print(f"wrote {out} ({info['width']}x{info['height']}) from target pose {info['target']}")


@app.command("augment")
def augment_cmd(
    data: Path = typer.Argument(..., help="Dataset folder (never modified)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the enlarged dataset in DATA's layout."),
    model: Optional[Path] = typer.Option(None, "--model", help="Trained model (train run folder); default: train the recipe's model on DATA first."),
    recipe: str = typer.Option("tiny", help="Recipe name (tiny, cuhk03) or YAML path."),
    layout: Optional[str] = typer.Option(None, help="Force a layout: market1501, cuhk03 or generic."),
    k: Optional[int] = typer.Option(None, "-k", help="Target poses per source image (default: recipe)."),
    seed: int = typer.Option(0, help="Run seed (targets and noise derive from it)."),
    limit: Optional[int] = typer.Option(None, help="Trial run on the first N images (sorted by path)."),
    split: list[str] = typer.Option(["train"], "--split", help="Splits to re-pose (repeatable)."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps (default: recipe)."),
    scheduler: Optional[str] = typer.Option(None, help="Sampler (default: recipe): ddim, dpm++, unipc, euler, ddpm."),
    train_steps: Optional[int] = typer.Option(None, help="Training steps when no --model is given (default: recipe)."),
    backend: str = typer.Option("blazepose", help="Pose backend."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous posegen output in OUT."),
):
    """Re-pose every image of DATA into K target poses, filter, and write an enlarged dataset to OUT."""
    from posegen.augment import augment, summarize
    from posegen.pose.backends import get_backend
    from posegen.recipe import load_recipe

    with _clear_errors():
        rec = load_recipe(recipe)
        t0 = time.perf_counter()
        stage_time: dict[str, list[float]] = {}

        def timed(update):
            def cb(stage, done, total):
                now = time.perf_counter()
                stage_time.setdefault(stage, [now, done, now, done])[2:] = [now, done]
                update(stage, done, total)

            return cb

        with get_backend(backend) as be, _progress() as update:
            manifest = augment(
                data, out, recipe=rec, backend=be, model=model, layout=layout, seed=seed, k=k,
                limit=limit, splits=tuple(split), num_inference_steps=steps, scheduler=scheduler,
                train_steps=train_steps, resume=resume, overwrite=overwrite, progress=timed(update),
            )  # fmt: skip
    s = summarize(manifest)
    table = Table(title=f"posegen augment -> {out}")
    for col in ("real", "generated", "kept", "rejected", "mean OKS (kept)", "minutes"):
        table.add_column(col, justify="right")
    table.add_row(
        str(s["real"]), str(s["generated"]), str(s["kept"]), str(s["rejected"]),
        f"{s['mean_oks_kept']:.2f}", f"{(time.perf_counter() - t0) / 60:.1f}",
    )  # fmt: skip
    console.print(table)
    if s["rejected_by_reason"]:
        reasons = Table(title="rejected, by reason")
        reasons.add_column("reason")
        reasons.add_column("images", justify="right")
        for r, n in s["rejected_by_reason"].items():
            reasons.add_row(r, str(n))
        console.print(reasons)
    rates = Table(title="stages")
    for col in ("stage", "items", "seconds", "items/s"):
        rates.add_column(col, justify="right")
    for stage, (t_start, n_start, t_end, n_end) in stage_time.items():
        n, dt = n_end - n_start, max(t_end - t_start, 1e-9)
        rates.add_row(stage, str(n), f"{dt:.1f}", f"{n / dt:.2f}")
    console.print(rates)
    console.print(f"manifest: {out / 'manifest.parquet'}")


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
