"""The main job: a dataset folder in, an enlarged dataset folder out.

``augment(DIR, OUT)`` runs the stages in order, each a plain function over DataFrames:

1. :func:`posegen.data.load_dataset` — the manifest of DIR (its layout auto-detected);
2. :func:`posegen.pose.extract.extract_poses` — COCO-17 poses of every image (the pose bank);
3. the re-posing model: loaded from ``model`` or, when none is given, trained on DIR with the
   recipe (:func:`posegen.repose.train`);
4. :func:`posegen.augment.targets.choose_targets` — K target poses per source image;
5. :class:`posegen.repose.ReposePipeline` — generation, batched, one seeded noise per image;
6. :func:`posegen.filter.score_output` — pose fidelity (OKS) and sanity; every rejection has a reason;
7. writing OUT: the real images and the kept synthetic images in DIR's layout, plus
   ``manifest.parquet`` listing every image (real, kept and rejected).

Output conventions
------------------
- A synthetic image of source ``a/b/0001_c1s1_000151_01.jpg`` drawn for target number ``k`` is
  ``a/b/0001_c1s1_000151_01_pg<kk>.jpg`` (``kk`` two digits, the source's extension, the source's
  size). The ``_pg<kk>`` suffix keeps Market-1501 / CUHK03 names parseable (same pid and camera as
  the source) and marks the file as synthetic. Rejected outputs are kept for inspection under
  ``OUT/.posegen/rejected/`` (hidden, so dataset parsers ignore them).
- ``OUT/manifest.parquet``: one row per image: ``path`` (relative to OUT), ``pid``, ``camid``,
  ``split``, ``synthetic``, ``source`` (relative to DIR), ``k``, ``target_pose_source``, ``seed``,
  ``oks``, ``std``, ``n_keypoints``, ``kept``, ``reason``, ``width``, ``height``.
- ``OUT/.posegen/``: the run's state: ``run.json`` (settings), ``poses.parquet`` (the pose bank),
  ``parts/`` (one Parquet per finished batch), ``rejected/``, and ``model-run/`` when a model was
  trained. A run is rebuilt from OUT alone: ``resume=True`` skips finished work.

DIR is only read. Every file is written atomically. Every random choice derives from ``seed`` and
the source image's path, so a resumed run makes the choices an uninterrupted one makes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from .. import __version__
from .._io import atomic_save_image, atomic_to_parquet, atomic_write, atomic_write_json
from ..data import load_dataset
from ..data.images import read_image
from ..filter import score_output
from ..pose.backends import PoseBackend
from ..pose.extract import extract_poses, usable_poses
from ..pose.keypoints import num_confident, scale_keypoints
from ..recipe import Recipe
from .targets import choose_targets

__all__ = ["augment", "synthetic_name", "summarize", "OutputDirError", "MANIFEST_COLUMNS"]

STATE_DIR = ".posegen"

MANIFEST_COLUMNS = [
    "path", "pid", "camid", "split", "synthetic", "source", "k", "target_pose_source", "seed",
    "oks", "std", "n_keypoints", "kept", "reason", "width", "height",
]  # fmt: skip

Progress = Callable[[str, int, int], None]


class OutputDirError(ValueError):
    """OUT cannot be used: not empty without resume/overwrite, overlaps DIR, or settings differ."""


def synthetic_name(rel_path: str, k: int) -> str:
    """Name of the ``k``-th synthetic image of a source (see the module's output conventions).

    >>> synthetic_name("bounding_box_train/0002_c1s1_000451_03.jpg", 1)
    'bounding_box_train/0002_c1s1_000451_03_pg01.jpg'
    """
    p = Path(rel_path)
    return (p.parent / f"{p.stem}_pg{k:02d}{p.suffix}").as_posix()


def _check_dirs(root: Path, out: Path) -> None:
    if out == root or out.is_relative_to(root) or root.is_relative_to(out):
        raise OutputDirError(f"OUT ({out}) must not be DIR ({root}), inside it, or contain it: DIR is never modified")


def _prepare_out(out: Path, settings: dict, resume: bool, overwrite: bool) -> None:
    run_json = out / STATE_DIR / "run.json"
    if out.exists() and any(out.iterdir()):
        if overwrite:
            if not run_json.exists():
                raise OutputDirError(
                    f"{out} is not empty and was not written by posegen augment (no {STATE_DIR}/run.json): "
                    "refusing to delete it; choose another --out"
                )
            shutil.rmtree(out)
        elif resume:
            if not run_json.exists():
                raise OutputDirError(f"cannot resume: {run_json} not found")
            before = json.loads(run_json.read_text())
            diff = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if diff:
                raise OutputDirError(
                    f"cannot resume {out}: settings differ from the interrupted run in {diff}; "
                    "use the same options or --overwrite"
                )
        else:
            raise OutputDirError(f"{out} is not empty: pass --resume to continue a run or --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_json, settings)


def _copy_file(src: Path, dst: Path) -> None:
    if not dst.exists():
        atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _load_model(model: str | os.PathLike):
    from ..repose import load_pipeline

    model = Path(model)
    if (model / "model" / "model_index.json").exists():  # a training run folder
        model = model / "model"
    return load_pipeline(model)


def augment(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: Recipe,
    backend: PoseBackend,
    model: str | os.PathLike | None = None,
    layout: str | None = None,
    seed: int = 0,
    k: int | None = None,
    limit: int | None = None,
    splits: tuple[str, ...] = ("train",),
    num_inference_steps: int | None = None,
    scheduler: str | None = None,
    train_steps: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Augment a dataset folder with re-posed images of its identities.

    Args:
        root: the dataset folder DIR (any layout :func:`posegen.data.load_dataset` reads).
        out: the output folder OUT (created; must not overlap DIR).
        recipe: validated recipe (sampler, pose thresholds, filter thresholds, K, and the training
            recipe used when no model is given).
        backend: pose backend for the pose bank and for re-estimating poses on outputs.
        model: a trained model (a ``posegen train`` run folder or its ``model/`` pipeline folder);
            None trains one on DIR with ``recipe`` first, under ``OUT/.posegen/model-run``.
        layout: force a layout instead of auto-detection.
        seed: run seed; all choices and noises derive from it and the source paths.
        k: target poses per source (default ``recipe.augment.k``).
        limit: use only the first ``limit`` images (sorted by path) of the chosen splits — a trial
            run on a subset; poses, targets and the copied real images are restricted to them.
        splits: splits whose images are re-posed (query/gallery images are copied, never re-posed).
        num_inference_steps, scheduler: sampler overrides (default ``recipe.sample``).
        train_steps: overrides ``recipe.train.steps`` when a model is trained here.
        resume: continue an interrupted run in OUT (settings must match).
        overwrite: replace a previous posegen output in OUT.
        progress: ``progress(stage, done, total)`` with stage ``"poses"``, ``"train"``, ``"copy"`` or
            ``"generate"``.

    Returns:
        The output manifest (also written to ``OUT/manifest.parquet``), columns
        :data:`MANIFEST_COLUMNS`.

    Raises:
        OutputDirError: OUT is not empty (without resume/overwrite), overlaps DIR, or a resumed
            run's settings differ.
        posegen.data.LayoutError: DIR's layout is unknown or it has no images.
        FileNotFoundError: ``model`` does not exist.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    _check_dirs(root, out)
    progress = progress or (lambda stage, done, total: None)
    k = k or recipe.augment.k
    steps = num_inference_steps or recipe.sample.steps
    sched = scheduler or recipe.sample.scheduler
    settings = dict(
        root=str(root), layout=layout, model=str(Path(model).resolve()) if model else None,
        recipe=recipe.model_dump(mode="json"), backend=backend.name, seed=seed, k=k, limit=limit,
        splits=list(splits), steps=steps, scheduler=sched, train_steps=train_steps, version=__version__,
    )  # fmt: skip
    # Check the inputs before touching OUT.
    manifest = load_dataset(root, layout)
    if model is not None and not Path(model).exists():
        raise FileNotFoundError(f"model not found: {model}")
    _prepare_out(out, settings, resume, overwrite)
    state = out / STATE_DIR

    manifest = manifest[~manifest["synthetic"]].reset_index(drop=True)
    if limit is not None:
        chosen = manifest[manifest["split"].isin(splits)].head(limit)
        manifest = manifest[manifest["path"].isin(chosen["path"])].reset_index(drop=True)

    # 1. poses (the bank), resumable
    poses = extract_poses(
        manifest, root, backend, out=state / "poses.parquet", progress=lambda d, t: progress("poses", d, t)
    )
    pose_of = poses.set_index("path")
    usable = usable_poses(poses, min_score=recipe.pose.min_score, min_keypoints=recipe.pose.min_keypoints)
    usable_paths = set(poses.loc[usable, "path"])

    # 2. the model
    if model is None:
        from ..repose import train

        run_dir = state / "model-run"
        model_dir = train(
            recipe, manifest, poses, root, run_dir, steps=train_steps,
            progress=lambda step, total, logs: progress("train", step, total),
        )  # fmt: skip
        pipe = _load_model(model_dir)
    else:
        pipe = _load_model(model)
    from ..repose import make_scheduler

    pipe.scheduler = make_scheduler(sched, pipe.scheduler.config)

    # 3. copy the real images (the enlarged dataset contains them)
    for i, rel in enumerate(manifest["path"], 1):
        _copy_file(root / rel, out / rel)
        progress("copy", i, len(manifest))

    # 4. targets
    meta = manifest.set_index("path")
    is_source = manifest["split"].isin(splits)
    sources = manifest[is_source & manifest["path"].isin(usable_paths)]
    bank = manifest[manifest["path"].isin(usable_paths)]
    tasks = choose_targets(sources, bank, k=k, seed=seed, other_pids=recipe.augment.target_from_other_pids)

    # 5-7. generate, filter, write — batch by batch, each batch's rows saved as one part file
    parts_dir = state / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    part_files = sorted(parts_dir.glob("part-*.parquet"))
    done = pd.concat([pd.read_parquet(p) for p in part_files], ignore_index=True) if part_files else None
    done_keys = set(zip(done["source"], done["k"])) if done is not None else set()
    todo = tasks[[key not in done_keys for key in zip(tasks["source"], tasks["k"])]].reset_index(drop=True)
    n_parts, total = len(part_files), len(tasks)
    progress("generate", total - len(todo), total)
    bs = recipe.sample.batch_size
    for start in range(0, len(todo), bs):
        batch = todo.iloc[start : start + bs]
        rows = _generate_batch(batch, pipe, root, out, pose_of, meta, backend, recipe, steps)
        atomic_to_parquet(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), parts_dir / f"part-{n_parts:06d}.parquet")
        n_parts += 1
        progress("generate", total - len(todo) + start + len(batch), total)

    # 8. the output manifest: real images, synthetic images (kept and rejected), unusable sources
    part_files = sorted(parts_dir.glob("part-*.parquet"))
    synthetic = pd.concat([pd.read_parquet(p) for p in part_files], ignore_index=True) if part_files else None
    real = pd.DataFrame(
        {
            "path": manifest["path"], "pid": manifest["pid"], "camid": manifest["camid"],
            "split": manifest["split"], "synthetic": False, "source": manifest["path"], "k": 0,
            "target_pose_source": "", "seed": -1, "oks": np.nan, "std": np.nan, "n_keypoints": -1,
            "kept": True, "reason": "", "width": pose_of.loc[manifest["path"], "width"].to_numpy(),
            "height": pose_of.loc[manifest["path"], "height"].to_numpy(),
        }
    )  # fmt: skip
    skipped = manifest[is_source & ~manifest["path"].isin(usable_paths)]
    skipped_rows = [
        _row(src, meta, k=0, path="", kept=False, reason=_unusable_reason(pose_of.loc[src], recipe))
        for src in skipped["path"]
    ]
    frames = [real, pd.DataFrame(skipped_rows, columns=MANIFEST_COLUMNS)]
    if synthetic is not None:
        frames.insert(1, synthetic)
    result = pd.concat([f for f in frames if len(f)], ignore_index=True)[MANIFEST_COLUMNS]
    atomic_to_parquet(result, out / "manifest.parquet")
    return result


def _unusable_reason(pose_row: pd.Series, recipe: Recipe) -> str:
    if pose_row["status"] != "ok":
        return f"source pose unavailable: {pose_row['reason']}"
    n = num_confident(pose_row["keypoints"], recipe.pose.min_score)
    return f"source pose has {n} keypoints (< {recipe.pose.min_keypoints})"


def _row(source: str, meta: pd.DataFrame, **fields) -> dict:
    m = meta.loc[source]
    row = dict(
        path="", pid=int(m["pid"]), camid=int(m["camid"]), split=str(m["split"]), synthetic=True,
        source=source, k=0, target_pose_source="", seed=-1, oks=np.nan, std=np.nan, n_keypoints=-1,
        kept=False, reason="", width=-1, height=-1,
    )  # fmt: skip
    row.update(fields)
    return row


def _generate_batch(batch, pipe, root, out, pose_of, meta, backend, recipe, steps) -> list[dict]:
    import torch

    images, src_kp, tgt_kp, tgt_sizes, gens = [], [], [], [], []
    cache: dict[str, np.ndarray] = {}
    for src, tgt, s in zip(batch["source"], batch["target"], batch["seed"]):
        if src not in cache:
            cache[src] = read_image(root / src)
        images.append(cache[src])
        src_kp.append(pose_of.loc[src, "keypoints"])
        tgt_kp.append(pose_of.loc[tgt, "keypoints"])
        tgt_sizes.append((int(pose_of.loc[tgt, "width"]), int(pose_of.loc[tgt, "height"])))
        gens.append(torch.Generator().manual_seed(int(s)))
    with torch.no_grad():
        result = pipe(
            source_images=images, source_keypoints=np.stack(src_kp), target_keypoints=np.stack(tgt_kp),
            target_sizes=tgt_sizes, num_inference_steps=steps, generator=gens, output_type="pt",
        )  # fmt: skip
    result = result.images if hasattr(result, "images") else result
    outputs = ((result.float().cpu() + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()  # [B, h, w, 3] in [0, 1]
    rows = []
    for i, (src, kk, tgt, s) in enumerate(zip(batch["source"], batch["k"], batch["target"], batch["seed"])):
        h, w = images[i].shape[:2]
        raw = outputs[i]
        if np.isfinite(raw).all():
            u8 = np.clip(np.round(raw * 255.0), 0, 255).astype(np.uint8)
            img = Image.fromarray(u8).resize((w, h), Image.BICUBIC)  # back to the source's size
            scored_input = np.asarray(img)
        else:
            img, scored_input = None, raw
        target = scale_keypoints(tgt_kp[i], tgt_sizes[i], (w, h))
        sc = score_output(
            scored_input, target, backend, min_oks=recipe.filter.min_oks,
            min_std=recipe.filter.min_std, min_score=recipe.pose.min_score,
        )  # fmt: skip
        name = synthetic_name(src, int(kk))
        rel = name if sc.kept else f"{STATE_DIR}/rejected/{name}"
        if img is not None:
            atomic_save_image(img, out / rel)
        else:
            rel = ""
        rows.append(
            _row(
                src, meta, path=rel, k=int(kk), target_pose_source=tgt, seed=int(s), oks=sc.oks,
                std=sc.std, n_keypoints=sc.n_keypoints, kept=sc.kept, reason=sc.reason, width=w, height=h,
            )  # fmt: skip
        )
    return rows


def summarize(manifest: pd.DataFrame) -> dict:
    """Counts of an augment manifest.

    Returns:
        ``{"real": n, "generated": n, "kept": n, "rejected": n, "rejected_by_reason": {reason: n},
        "mean_oks_kept": float}`` (``generated`` excludes sources skipped for an unusable pose, which
        count as rejected with their reason).
    """
    syn = manifest[manifest["synthetic"]]
    gen = syn[syn["k"] > 0]
    rejected = syn[~syn["kept"]]
    kept = syn[syn["kept"]]
    return {
        "real": int((~manifest["synthetic"]).sum()),
        "generated": int(len(gen)),
        "kept": int(len(kept)),
        "rejected": int(len(rejected)),
        "rejected_by_reason": {str(r): int(n) for r, n in rejected["reason"].value_counts().items()},
        "mean_oks_kept": float(kept["oks"].mean()) if len(kept) else float("nan"),
    }

