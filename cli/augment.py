"""``posegen augment`` and ``posegen filter``: Typer commands over :mod:`posegen.augment` and :mod:`posegen.filter`.

Registered in :mod:`posegen.cli.app` as ``app.command("augment")(augment_cmd)``. The commands only parse
options, call the library and render progress and tables; the shared helpers (console, progress,
verbosity, error handling) come from :mod:`cli.common`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from posegen.pose.backends import DEFAULT_BACKEND

from .common import clear_errors as _clear_errors
from .common import console, pose_backend, set_verbosity
from .common import progress_display as _progress

__all__ = ["augment_cmd", "filter_cmd", "counts_table"]


def _warn_no_reid(console, recipe, reid_weights) -> None:
    if reid_weights is None and recipe.filter.reid_weights is None:
        console.print(
            "[yellow]warning:[/yellow] no re-ID weights (--reid-weights or the recipe's filter.reid_weights): "
            "the identity checks are skipped and their scores are NaN (nothing is downloaded)",
            soft_wrap=True,
        )


def counts_table(before: dict | None, after: dict, title: str) -> list[Table]:
    """Rich tables of kept/rejected counts and rejections by reason (``before`` -> ``after`` when given).

    ``before`` and ``after`` are :func:`posegen.augment.summarize` results.
    """
    table = Table(title=title)
    cols = ["", "real", "generated", "kept", "rejected", "mean OKS (kept)", "mean identity (kept)"]
    for col in cols:
        table.add_column(col, justify="right")

    def row(name, s):
        table.add_row(
            name, str(s["real"]), str(s["generated"]), str(s["kept"]), str(s["rejected"]), f"{s['mean_oks_kept']:.2f}",
            f"{s['mean_identity_kept']:.2f}",
        )  # fmt: skip

    if before is not None:
        row("before", before)
    row("after" if before is not None else "", after)
    reasons = Table(title="rejected, by reason")
    reasons.add_column("reason")
    if before is not None:
        reasons.add_column("before", justify="right")
    reasons.add_column("images", justify="right")
    names = sorted(set(after["rejected_by_reason"]) | set((before or {}).get("rejected_by_reason", {})))
    for r in names:
        cells = [r] + ([str(before["rejected_by_reason"].get(r, 0))] if before is not None else [])
        reasons.add_row(*cells, str(after["rejected_by_reason"].get(r, 0)))
    return [table, reasons] if names else [table]


def _distributed():
    """``((index, count), barrier, device)`` under a multi-process launcher (``accelerate launch``,
    ``torchrun``: ``WORLD_SIZE`` > 1), else ``(None, None, None)``; uses accelerate's
    ``PartialState`` (``device``: this process's GPU, or ``"cpu"``)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None, None, None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes <= 1:
        return None, None, None
    return (state.process_index, state.num_processes), state.wait_for_everyone, str(state.device)


def _print_notes(out: Path) -> None:
    """Print the run record's notes (skipped files, ...) except the re-ID one, already warned about."""
    import json

    from posegen.augment.run import NO_REID_NOTE, STATE_DIR

    try:
        notes = json.loads((out / STATE_DIR / "run.json").read_text()).get("notes", [])
    except (OSError, ValueError):
        return
    for note in notes:
        if note != NO_REID_NOTE:
            console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def _print_rejected_inputs(s: dict) -> None:
    """Print the count of unusable input images and their reasons (nothing when there are none)."""
    if s.get("rejected_inputs"):
        console.print(f"[yellow]rejected input images: {s['rejected_inputs']}[/yellow] (not copied; listed in the manifest and the report)")
        for reason, n in s["rejected_inputs_by_reason"].items():
            console.print(f"  {reason}: {n}", markup=False, highlight=False)


def augment_cmd(
    data: Path = typer.Argument(..., help="Dataset folder (never modified)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the enlarged dataset in DATA's layout."),
    model: Optional[Path] = typer.Option(None, "--model", help="Trained model (train run folder or model folder); default: the model shipped with posegen."),
    recipe: str = typer.Option("default", help="Recipe name (default, tiny, cuhk03) or YAML path: sampler, filter thresholds, K."),
    layout: Optional[str] = typer.Option(None, help="Force a layout: market1501, cuhk03, deepfashion or generic."),
    k: Optional[int] = typer.Option(None, "-k", min=1, help="Target poses per source image (default: recipe)."),
    seed: int = typer.Option(0, help="Run seed (targets and noise derive from it)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Trial run on the first N images (sorted by path)."),
    real_fraction: Optional[float] = typer.Option(
        None, "--real-fraction", help="Re-pose only this fraction of the images (>= 1 per identity): the subset `eval-downstream --real-fraction F --seeds S` trains on."
    ),
    subset_seeds: Optional[str] = typer.Option(
        None, "--subset-seeds", help="Seeds of the --real-fraction draw, e.g. '0,1,2' (the union of their subsets; default: --seed)."
    ),
    split: list[str] = typer.Option(["train"], "--split", help="Splits to re-pose (repeatable)."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps (default: recipe)."),
    scheduler: Optional[str] = typer.Option(None, help="Sampler (default: recipe): ddim, dpm++, unipc, euler, ddpm."),
    train_steps: Optional[int] = typer.Option(None, help="Without --model: first train the (pixel-space) recipe's model on DATA for this many steps."),
    backend: str = typer.Option(DEFAULT_BACKEND, help="Pose backend, as in extract-poses (auto: MoveNet when its weights are found, else BlazePose full)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Local weights file of the pose backend (for backends that need one, as in extract-poses)."),
    reid_weights: Optional[Path] = typer.Option(
        None, "--reid-weights", help="Re-ID embedder ONNX file for the identity checks, or colour-histogram (garments; the deepfashion recipe) (default: the recipe's filter.reid_weights)."
    ),
    report_rows: int = typer.Option(200, "--report-rows", min=0, help="Most image rows in OUT/report.html."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous posegen output in OUT."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the model runs: cpu or cuda (cuda:1, ...). Default: cpu; under accelerate launch with GPUs, each process's own GPU."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Batches generated at once, each in its own thread with its share of the cores (default: the cores torch uses on the CPU, OMP_NUM_THREADS when set, at most 8; 1 on a GPU). Outputs do not depend on it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (errors and the summary still print)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Native library log lines and error tracebacks."),
):
    """Re-pose every image of DATA into K target poses, filter, and write an enlarged dataset to OUT.

    Under ``accelerate launch`` (or ``torchrun``) with several processes, each process takes a
    shard of the images (stable hash of the path) and the main process merges the shards into OUT.
    """
    from posegen.augment import augment, summarize
    from posegen.recipe import load_recipe

    from .downstream import parse_ints

    set_verbosity(quiet, verbose)

    sub_seeds = tuple(parse_ints(subset_seeds, "--subset-seeds")) if subset_seeds is not None else None
    if sub_seeds is not None and real_fraction is None:
        raise typer.BadParameter("--subset-seeds needs --real-fraction")
    with _clear_errors():
        rec = load_recipe(recipe)
        _warn_no_reid(console, rec, reid_weights)
        t0 = time.perf_counter()
        stage_time: dict[str, list[float]] = {}

        def timed(update):
            def cb(stage, done, total):
                now = time.perf_counter()
                stage_time.setdefault(stage, [now, done, now, done])[2:] = [now, done]
                update(stage, done, total)

            return cb

        shard, barrier, shard_device = _distributed()
        with pose_backend(backend, weights) as be, _progress() as update:
            manifest = augment(
                data, out, recipe=rec, backend=be, model=model, layout=layout, seed=seed, k=k,
                limit=limit, real_fraction=real_fraction, subset_seeds=sub_seeds, splits=tuple(split), num_inference_steps=steps, scheduler=scheduler,
                train_steps=train_steps, reid_weights=reid_weights, report_rows=report_rows, resume=resume,
                overwrite=overwrite, progress=timed(update), shard=shard, barrier=barrier,
                device=device or shard_device or "cpu", workers=workers,
            )  # fmt: skip
    if shard is not None and shard[0] != 0:
        console.print(f"shard {shard[0]} of {shard[1]}: done ({len(manifest)} generated rows); the main process writes {out / 'manifest.parquet'}")
        return
    s = summarize(manifest)
    console.print(f"real images: {s['real']}; {(time.perf_counter() - t0) / 60:.1f} minutes")
    _print_rejected_inputs(s)
    _print_notes(out)
    for t in counts_table(None, s, f"posegen augment -> {out}"):
        console.print(t)
    rates = Table(title="stages")
    for col in ("stage", "items", "seconds", "items/s"):
        rates.add_column(col, justify="right")
    for stage, (t_start, n_start, t_end, n_end) in stage_time.items():
        n, dt = n_end - n_start, max(t_end - t_start, 1e-9)
        rates.add_row(stage, str(n), f"{dt:.1f}", f"{n / dt:.2f}")
    console.print(rates)
    console.print(f"manifest: {out / 'manifest.parquet'}; report: {out / 'report.html'}")


def filter_cmd(
    out: Path = typer.Argument(..., help="An augment output folder (OUT)."),
    recipe: Optional[str] = typer.Option(None, help="Recipe whose filter thresholds apply (default: the run's own)."),
    reid_weights: Optional[Path] = typer.Option(
        None, "--reid-weights", help="Re-ID embedder ONNX file (default: the recipe's, else the run's)."
    ),
    backend: str = typer.Option(DEFAULT_BACKEND, help="Pose backend for re-estimating poses (use the run's)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Local weights file of the pose backend (use the run's)."),
    report_rows: int = typer.Option(200, "--report-rows", min=0, help="Most image rows in OUT/report.html."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (errors and the summary still print)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Native library log lines and error tracebacks."),
):
    """Re-score the generated images of OUT with the current thresholds, move files whose decision
    changed, and rewrite manifest.parquet and the report."""
    import json

    import pandas as pd

    from posegen.augment import summarize
    from posegen.filter import refilter
    from posegen.recipe import Recipe, load_recipe

    set_verbosity(quiet, verbose)
    with _clear_errors():
        manifest_file, run_json = out / "manifest.parquet", out / ".posegen" / "run.json"
        for f in (manifest_file, run_json):
            if not f.is_file():
                raise FileNotFoundError(f"not an augment output folder: {f} not found")
        before = summarize(pd.read_parquet(manifest_file))
        rec = load_recipe(recipe) if recipe else Recipe.model_validate(json.loads(run_json.read_text())["recipe"])
        run_reid = json.loads(run_json.read_text()).get("reid_weights")
        _warn_no_reid(console, rec, reid_weights or run_reid)
        with pose_backend(backend, weights) as be, _progress() as update:
            manifest = refilter(
                out, recipe=rec, backend=be, reid_weights=reid_weights, report_rows=report_rows,
                progress=update,
            )  # fmt: skip
    after = summarize(manifest)
    _print_rejected_inputs(after)
    for t in counts_table(before, after, f"posegen filter {out}"):
        console.print(t)
    console.print(f"manifest: {out / 'manifest.parquet'}; report: {out / 'report.html'}")
