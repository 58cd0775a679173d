"""Re-score an existing ``augment`` output folder with the current filter thresholds.

:func:`refilter` recomputes every score of every generated image (kept ones in OUT, rejected ones
under ``OUT/.posegen/rejected/``) from the files on disk, applies the recipe's thresholds, moves
images whose decision changed (``os.replace``, atomic on one file system), and rewrites the part
files, ``manifest.parquet`` and the report. DIR (the input dataset) is only read.

Pose fidelity is scored against the pose bank's target pose. When the run sampled with prior
guidance (``sample.prior_guidance > 0``), ``augment`` scored against the joints as moved by the
sampler, which are not stored, so re-filtering such a run measures OKS to the unmoved target (the
moves are small, a fraction of a joint's OKS tolerance, but the scores can differ slightly).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .._io import atomic_to_parquet, atomic_write_json
from .scores import IMPLAUSIBLE_TARGET

__all__ = ["refilter", "model_resolution"]


def model_resolution(out: Path, settings: dict, fallback: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of the model an augment run used (its ``unet/config.json``), else ``fallback``."""
    candidates = []
    if settings.get("model"):
        m = Path(settings["model"])
        candidates += [m / "model" / "unet" / "config.json", m / "unet" / "config.json"]
    candidates.append(out / ".posegen" / "model-run" / "model" / "unet" / "config.json")
    for c in candidates:
        if c.is_file():
            res = json.loads(c.read_text()).get("resolution")
            if res:
                return int(res[0]), int(res[1])
    return tuple(int(v) for v in fallback)


def refilter(
    out_dir: str | os.PathLike,
    *,
    recipe=None,
    backend,
    reid_weights: str | os.PathLike | None = None,
    report_rows: int = 200,
    batch_size: int = 64,
    progress: Callable[[str, int, int], None] | None = None,
) -> pd.DataFrame:
    """Re-score the generated images of an augment output folder and apply the thresholds again.

    Args:
        out_dir: an ``augment`` output folder (with ``manifest.parquet``, ``.posegen/run.json`` and
            ``.posegen/poses.parquet``).
        recipe: the :class:`posegen.recipe.Recipe` whose ``filter``, ``pose`` and ``augment`` (prior)
            settings apply; None uses the run's own recipe (from ``run.json``).
        backend: pose backend for re-estimating each output's pose (use the run's backend for
            comparable scores).
        reid_weights: re-ID embedder ONNX file; default ``recipe.filter.reid_weights``, else the one
            the run used. None everywhere: identity scores are NaN and those checks are skipped.
        report_rows: most rows of the rewritten ``report.html``.
        batch_size: images scored per batch.
        progress: ``progress("rescore", done, total)``.

    Returns:
        The new manifest (also written to ``OUT/manifest.parquet``), same columns as augment's.
        Rows without an image (rejected before generation, non-finite outputs, unusable sources) are
        kept as they were, except that a kept image whose target pose the prior now finds
        implausible is rejected with ``"implausible target pose"``. An image missing from both
        OUT and the rejected folder is recorded as rejected with reason ``"output file missing"``.

    Raises:
        FileNotFoundError: OUT, its manifest, ``run.json`` or pose bank, or ``reid_weights`` is
            missing (the message names the path).
    """
    from ..augment.run import (
        MANIFEST_COLUMNS, NO_REID_NOTE, SCORE_COLUMNS, STATE_DIR, _decode, _identity_reference, with_score_columns,
        _prior_energies, _Scorer, report_placement, synthetic_name,
    )  # fmt: skip
    from ..data import load_dataset
    from ..pose.formats import read_poses
    from ..recipe import Recipe
    from .identity import load_embedder

    out = Path(out_dir).resolve()
    state = out / STATE_DIR
    for f in (out / "manifest.parquet", state / "run.json", state / "poses.parquet"):
        if not f.is_file():
            raise FileNotFoundError(f"not an augment output folder: {f} not found")
    progress = progress or (lambda stage, done, total: None)
    settings = json.loads((state / "run.json").read_text())
    recipe = recipe if recipe is not None else Recipe.model_validate(settings["recipe"])
    reid = reid_weights if reid_weights is not None else (recipe.filter.reid_weights or settings.get("reid_weights"))
    embedder = load_embedder(reid)
    # an OUT written before a score column existed: the column is added (NaN) and filled by the rescore
    manifest = with_score_columns(pd.read_parquet(out / "manifest.parquet"))
    poses = read_poses(state / "poses.parquet")
    pose_of = poses.set_index("path")

    syn = manifest["synthetic"].astype(bool) & (manifest["k"] > 0)
    has_image = syn & manifest["path"].astype(str).ne("")  # rows rejected before generation have no image
    todo = manifest[has_image]

    # identity references: DIR's real train images when DIR is still there, else OUT's copies
    root = Path(settings.get("root") or "")
    notes = []
    if settings.get("root") and root.is_dir():
        dataset = load_dataset(root, settings.get("layout"))
        dataset = dataset[~dataset["synthetic"]]
        ref_root = root
    else:
        dataset = manifest[~manifest["synthetic"].astype(bool)]
        ref_root = out
        notes.append(f"DIR {settings.get('root')} not found: the identity check uses the real images in OUT")
    if embedder is None:
        notes.append(NO_REID_NOTE)
    src_rows = manifest[~manifest["synthetic"].astype(bool)]
    sources = src_rows[src_rows["path"].isin(set(todo["source"]))]
    reference = _identity_reference(embedder, dataset, ref_root, sources)
    latent = settings.get("model_kind") == "latent"
    frame = (256, 128) if latent else model_resolution(out, settings, tuple(recipe.model.resolution))
    scorer = _Scorer(recipe, backend, pose_of, out, frame, embedder, reference,
                     align_targets=latent and recipe.augment.align_targets)  # fmt: skip

    # prior energies of the targets, with the recipe's threshold
    targets = sorted(set(manifest.loc[syn, "target_pose_source"]) & set(pose_of.index))
    energy, max_energy = _prior_energies(
        np.stack(pose_of.loc[targets, "keypoints"].to_list()) if targets else np.zeros((0, 17, 3)), recipe
    )
    energy_of = dict(zip(targets, energy))

    new = manifest.copy()
    idx = list(todo.index)
    progress("rescore", 0, len(idx))
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        images, ok, files = [], [], {}
        for i in chunk:
            r = manifest.loc[i]
            name = synthetic_name(r["source"], int(r["k"]))
            found = [p for p in (r["path"], name, f"{STATE_DIR}/rejected/{name}") if p and (out / p).is_file()]
            if not found:
                new.loc[i, SCORE_COLUMNS] = np.nan
                new.loc[i, ["kept", "reason", "path"]] = [False, "output file missing", ""]
                continue
            files[i] = found[0]
            images.append(_decode((out / found[0]).read_bytes()))
            ok.append(i)
        if ok:
            sub = manifest.loc[ok]
            e = np.array([energy_of.get(t, np.nan) for t in sub["target_pose_source"]], dtype=np.float64)
            sc = scorer.score(images, list(sub["source"]), list(sub["target_pose_source"]), [int(p) for p in sub["pid"]], e)
            for j, i in enumerate(ok):
                r = sc.iloc[j]
                kept, reason = bool(r["kept"]), str(r["reason"])
                if max_energy is not None and e[j] > max_energy:
                    kept, reason = False, IMPLAUSIBLE_TARGET
                name = synthetic_name(manifest.loc[i, "source"], int(manifest.loc[i, "k"]))
                dst = name if kept else f"{STATE_DIR}/rejected/{name}"
                if files[i] != dst:
                    (out / dst).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(out / files[i], out / dst)
                for c in SCORE_COLUMNS:
                    new.loc[i, c] = float(r[c])
                new.loc[i, "n_keypoints"] = int(r["n_keypoints"])
                new.loc[i, ["kept", "reason", "path"]] = [kept, reason, dst]
        progress("rescore", min(start + batch_size, len(idx)), len(idx))

    new = new[MANIFEST_COLUMNS].astype(manifest[MANIFEST_COLUMNS].dtypes.to_dict())
    # the part files (what augment --resume rebuilds the manifest from) agree with the new decisions
    by_key = new[syn].set_index(["source", "k"])
    for part in sorted((state / "parts").glob("part-*.parquet")):
        df = with_score_columns(pd.read_parquet(part))
        keys = list(zip(df["source"], df["k"]))
        upd = by_key.loc[keys].reset_index()[MANIFEST_COLUMNS]
        if not upd.equals(df[MANIFEST_COLUMNS]):
            atomic_to_parquet(upd.astype(df[MANIFEST_COLUMNS].dtypes.to_dict()), part)
    atomic_to_parquet(new, out / "manifest.parquet")
    before, after = manifest.loc[syn, "kept"].astype(bool), new.loc[syn, "kept"].astype(bool)
    atomic_write_json(
        state / "refilter.json",
        dict(
            filter=recipe.filter.model_dump(mode="json"), prior_threshold=max_energy,
            reid_weights=str(reid) if reid else None, backend=backend.name, frame_hw=list(frame),
            kept_before=int(before.sum()), kept_after=int(after.sum()),
            moved_to_rejected=int((before & ~after).sum()), moved_to_kept=int((~before & after).sum()), notes=notes,
        ),
    )  # fmt: skip
    from ..report import write_report

    write_report(
        out, new, recipe, prior_threshold=max_energy, rows=report_rows, seed=int(settings.get("seed", 0)),
        notes=notes, place_target=report_placement(recipe, latent),
    )  # fmt: skip
    return new
