"""``posegen repose``: the Typer command over :func:`posegen.repose.single.repose_one` (one image)
and :func:`posegen.repose.batch.repose_pairs` (``--pairs``: a Pose-Transfer pairs file).

Registered in :mod:`posegen.cli.app` as ``app.command("repose")(repose_cmd)``. The command only
parses options, calls the library and renders progress and tables.
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
from .common import fail as _fail
from .common import progress_display as _progress

__all__ = ["repose_cmd"]

_SINGLE = ("--source", "--target-pose", "--target-name")
_BATCH = ("--poses", "--images", "--batch-size", "--limit")


def repose_cmd(
    model: Optional[Path] = typer.Option(None, "--model", help="A train run folder or its model/ folder (default: the model shipped with posegen)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output PNG (one image), or output folder (--pairs)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Source image of the person (one-image mode)."),
    target_pose: Optional[Path] = typer.Option(
        None, "--target-pose", help="An image whose pose to copy, or a keypoints file (.parquet/.csv/.json) (one-image mode)."
    ),
    target_name: Optional[str] = typer.Option(None, help="Row of the keypoints file to use (its path/name); default: the first ok row."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Pose-Transfer pairs CSV (header from,to): re-pose every pair into OUT/<from stem>__<to stem>.png."),
    poses: Optional[Path] = typer.Option(None, "--poses", help="With --pairs: keypoints of the images named in the pairs (.parquet/.csv/.json)."),
    images: Optional[Path] = typer.Option(None, "--images", help="With --pairs: folder of the source images."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="With --pairs: pairs per batch (default: the model's recipe)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="With --pairs: only the first N pairs."),
    steps: Optional[int] = typer.Option(None, min=1, help="Sampling steps (default: the model's recipe)."),
    scheduler: Optional[str] = typer.Option(None, help="Sampler: ddim, dpm++, unipc, euler, ddpm (default: the model's)."),
    seed: int = typer.Option(0, help="Noise seed (with --pairs, each pair's seed derives from it and the pair)."),
    backend: Optional[str] = typer.Option(
        None, help="Pose backend: for the source (and an image target) in one-image mode (default auto: MoveNet if its weights are found, else BlazePose); "
        "with --pairs, estimates source poses missing from --poses (default: none, such pairs fail)."
    ),
    pose_guidance: Optional[float] = typer.Option(None, "--pose-guidance", help="Pose guidance scale (default: the model's recipe, else 1.0)."),
    appearance_guidance: Optional[float] = typer.Option(None, "--appearance-guidance", help="Appearance guidance scale (default: the model's recipe, else 1.0)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (a CUDA device index like cuda:1 works too)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (errors and the summary still print)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Native library log lines and error tracebacks."),
):
    """Re-pose one image into a target pose, or every pair of a Pose-Transfer pairs file (--pairs)."""
    set_verbosity(quiet, verbose)
    given = {"--source": source, "--target-pose": target_pose, "--target-name": target_name,
             "--poses": poses, "--images": images, "--batch-size": batch_size, "--limit": limit}  # fmt: skip
    if pairs is not None:
        clash = [k for k in _SINGLE if given[k] is not None]
        if clash:
            _fail(f"--pairs cannot be combined with {', '.join(clash)} (those are for re-posing one image)")
        missing = [k for k in ("--poses", "--images") if given[k] is None]
        if missing:
            _fail(f"--pairs needs {' and '.join(missing)}")
        _repose_pairs(model, pairs, poses, images, out, batch_size, limit, steps, scheduler, seed, backend,
                      pose_guidance, appearance_guidance, device)  # fmt: skip
        return
    clash = [k for k in _BATCH if given[k] is not None]
    if clash:
        _fail(f"{', '.join(clash)} only work with --pairs")
    if source is None or target_pose is None:
        _fail("give --source and --target-pose (re-pose one image), or --pairs with --poses and --images (a batch)")
    from posegen.repose.single import repose_one

    with _clear_errors():
        info = repose_one(
            model, source, target_pose, out, target_name=target_name, steps=steps, scheduler=scheduler,
            seed=seed, backend=backend or DEFAULT_BACKEND, pose_guidance_scale=pose_guidance,
            appearance_guidance_scale=appearance_guidance, device=device,
        )  # fmt: skip
    console.print(f"wrote {out} ({info['width']}x{info['height']}) from target pose {info['target']}")


def _repose_pairs(model, pairs, poses, images, out, batch_size, limit, steps, scheduler, seed, backend,
                  pose_guidance, appearance_guidance, device) -> None:  # fmt: skip
    from contextlib import nullcontext

    from posegen.repose import load_pipeline
    from posegen.repose.batch import MANIFEST_NAME, model_sample_config, repose_pairs, resolve_model_dir

    with _clear_errors():
        model_dir = resolve_model_dir(model)
        sample = model_sample_config(model_dir)
        pipe = load_pipeline(model_dir, scheduler=scheduler, device=device)
        t0 = time.perf_counter()
        with (pose_backend(backend) if backend else nullcontext()) as be, _progress() as update:
            manifest = repose_pairs(
                pairs, poses, images, out, pipe=pipe,
                steps=steps or (sample.steps if sample else 20),
                batch_size=batch_size or (sample.batch_size if sample else 16),
                seed=seed, limit=limit, backend=be,
                pose_guidance_scale=_default(pose_guidance, sample, "pose_guidance"),
                appearance_guidance_scale=_default(appearance_guidance, sample, "appearance_guidance"),
                progress=lambda d, t: update("repose", d, t),
            )  # fmt: skip
    dt = time.perf_counter() - t0
    counts = manifest["status"].value_counts()
    n_ok = int(counts.get("ok", 0))
    table = Table(title=f"posegen repose --pairs -> {out}")
    for col in ("pairs", "generated", "skipped (existing)", "failed", "seconds", "images/s"):
        table.add_column(col, justify="right")
    table.add_row(
        str(len(manifest)), str(n_ok), str(int(counts.get("skipped-existing", 0))), str(int(counts.get("failed", 0))),
        f"{dt:.1f}", f"{n_ok / max(dt, 1e-9):.2f}",
    )  # fmt: skip
    console.print(table)
    failed = manifest[manifest["status"] == "failed"]
    if len(failed):
        reasons = Table(title="failed pairs (first 10)")
        for col in ("from", "to", "reason"):
            reasons.add_column(col)
        for frm, to, reason in failed[["from", "to", "reason"]].head(10).itertuples(index=False, name=None):
            reasons.add_row(frm, to, reason)
        console.print(reasons)
    console.print(f"manifest: {Path(out) / MANIFEST_NAME}")


def _default(value: float | None, sample, field: str) -> float | None:
    """The option's value, else the model's recipe ``sample.<field>``, else None (the pipeline's 1.0)."""
    if value is not None:
        return value
    return getattr(sample, field, None) if sample is not None else None
