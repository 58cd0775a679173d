"""The ``posegen`` command line: a thin Typer layer over the library.

Each command parses options, calls one library function and renders progress and tables with
Rich. No pipeline logic lives here. Imports go one way: this module registers the commands of
:mod:`cli.augment`, :mod:`cli.repose` and :mod:`cli.downstream`; the helpers they share (console,
progress, verbosity, error handling) live in :mod:`cli.common`.
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from posegen.pose.backends import BACKENDS, DEFAULT_BACKEND

from .augment import augment_cmd, filter_cmd
from .common import clear_errors as _clear_errors
from .common import console, pose_backend, set_verbosity
from .common import progress_display as _progress
from .downstream import eval_downstream_cmd
from .repose import repose_cmd

app = typer.Typer(
    name="posegen",
    help="Multiply person re-ID and fashion datasets with pose-guided diffusion (offline).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


#: ``--backend`` choices of extract-poses: every registered pose backend
PoseBackendName = Enum("PoseBackendName", {name: name for name in BACKENDS}, type=str)


@app.command("extract-poses")
def extract_poses_cmd(
    data: Path = typer.Argument(..., help="Dataset folder (Market-1501, CUHK03, or one sub-folder per identity)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .parquet (default), .csv (Pose-Transfer) or .json (COCO)."),
    layout: Optional[str] = typer.Option(None, help="Force a layout: market1501, cuhk03, deepfashion or generic."),
    backend: PoseBackendName = typer.Option(
        DEFAULT_BACKEND,
        help="Pose backend. auto: movenet (MoveNet Lightning, the most accurate per second on small crops, "
        "benchmarks/results/pose_gt.md) from --weights, $POSEGEN_MOVENET or ../shared/weights/movenet, else blazepose "
        "(BlazePose full, weights bundled with mediapipe). blazepose-heavy, rtmpose, dwpose and mmpose need --weights.",
    ),
    weights: Optional[str] = typer.Option(None, help="Local weights file for backends that need one."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images (sorted by path)."),
    shard: Optional[str] = typer.Option(
        None, "--shard", help="I/N: only the images of shard I of N (stable hash of the path, 0-based), for job arrays; merge the N files afterwards (README)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (errors and the summary still print)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the native mediapipe / absl / TFLite log lines and error tracebacks."),
):
    """Estimate COCO-17 keypoints for every image of DATA (resumable: a re-run skips done images)."""
    from posegen.data import load_dataset
    from posegen.data.layouts import skipped_images
    from posegen.pose.extract import extract_poses, pose_summary

    set_verbosity(quiet, verbose)
    backend = backend.value if isinstance(backend, PoseBackendName) else str(backend)
    with _clear_errors():
        if out.suffix.lower() not in (".parquet", ".csv", ".json"):
            out = out.with_suffix(out.suffix + ".parquet") if out.suffix else out.with_suffix(".parquet")
        manifest = load_dataset(data, layout)
        skipped = skipped_images(manifest)
        if skipped:
            console.print(
                f"[yellow]note:[/yellow] {len(skipped)} image files do not follow the {manifest.attrs['layout']} naming "
                f"and are not used (e.g. {', '.join(skipped[:3])})", highlight=False,
            )  # fmt: skip
        if limit is not None:
            manifest = manifest.head(limit)
        if shard is not None:
            manifest = _shard_rows(manifest, shard)
        t0 = time.perf_counter()
        with pose_backend(backend, weights) as be, _progress() as update:
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


def _shard_rows(manifest, spec: str):
    """The rows of ``manifest`` in shard ``I`` of ``N`` (``spec`` = ``"I/N"``, 0 <= I < N).

    Raises:
        ValueError: ``spec`` is not ``I/N`` with 0 <= I < N.
    """
    from posegen._io import shard_of

    try:
        i, n = (int(v) for v in spec.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise ValueError(f"--shard must be I/N with 0 <= I < N (e.g. 0/8), got {spec!r}") from None
    return manifest[[shard_of(p, n) == i for p in manifest["path"]]].reset_index(drop=True)


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder."),
    poses: Path = typer.Option(..., "--poses", help="Keypoints file from extract-poses (.parquet/.csv/.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (resumes if it has checkpoints)."),
    recipe: str = typer.Option("tiny", help="Recipe name (default, tiny, cuhk03) or YAML path; 'default' trains posegen's default model family (warp + latent repair)."),
    layout: Optional[str] = typer.Option(None, help="Force a layout."),
    steps: Optional[int] = typer.Option(None, min=1, help="Override the recipe's training steps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (errors and the summary still print)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Native library log lines and error tracebacks."),
):
    """Train the re-posing model on pairs of images of the same identity."""
    from posegen.data import load_dataset
    from posegen.pose.formats import read_poses
    from posegen.recipe import load_recipe
    from posegen.repose import train

    set_verbosity(quiet, verbose)
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
    """Console-script entry point. Ctrl-C ends a command with status 130 and a line saying how to
    continue (typer turns the ``KeyboardInterrupt`` into that status silently)."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(_interrupted())
    except SystemExit as e:
        if e.code == 130:
            _interrupted()
        raise


def _interrupted() -> int:
    console.print("[yellow]interrupted[/yellow]: re-run with --resume to continue")
    return 130


if __name__ == "__main__":
    main()
