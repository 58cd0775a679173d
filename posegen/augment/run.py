"""The main job: a dataset folder in, an enlarged dataset folder out.

``augment(DIR, OUT)`` runs the stages in order, each a plain function over DataFrames:

1. :func:`posegen.data.load_dataset` — the manifest of DIR (its layout auto-detected);
2. :func:`posegen.pose.extract.extract_poses` — COCO-17 poses of every image (the pose bank; with
   ``--limit``, widened by the next images of DIR up to ``augment.pose_bank_size``, :func:`pose_bank_extra`);
3. the re-posing model: loaded from ``model``; when none is given, the default model shipped with
   posegen (:func:`posegen.repose.default_model_dir`), or, only when ``train_steps`` is given, a
   pixel-space recipe's model trained on DIR first (:func:`posegen.repose.train`);
4. :func:`posegen.augment.targets.choose_targets` — K target poses per source image;
5. :class:`posegen.repose.ReposePipeline` — generation, batched, one seeded noise per image
   (with the default model, ``workers`` batches at once in threads, steps 5-7 each);
6. :func:`posegen.filter.filter_batch` — sanity, near-copy, pose fidelity (OKS) and identity
   (re-ID cosine) checks; every rejection has exactly one reason (the first failing check, in the
   order documented in :mod:`posegen.filter.scores`) and every computed score is stored;
7. writing OUT: the real images and the kept synthetic images in DIR's layout, plus
   ``manifest.parquet`` listing every image (real, kept and rejected), ``report.html`` (a contact
   sheet) and ``.posegen/report/scores.png`` (score distributions), see :mod:`posegen.report`.

Target poses are checked *before* generation with the pose-validity prior
(:func:`posegen.prior.load_pose_prior`, ``recipe.augment.use_prior``): an implausible target is
replaced by the next candidate of the source's seeded draw, or the row is rejected with reason
``"implausible target pose"`` without generating (:func:`choose_targets`). With the default model,
a source gets only targets its warp can honour (within ``augment.target_pose_oks`` and passing the
filter's pose-only checks predicted from the poses, :func:`_honour_check`); rows beyond those are
rejected without generating, reason ``"target pose the warp cannot honour"``.

Output conventions
------------------
- A synthetic image of source ``a/b/0001_c1s1_000151_01.jpg`` drawn for target number ``k`` is
  ``a/b/0001_c1s1_000151_01_pg<kk>.jpg`` (``kk`` two digits, the source's extension, the source's
  size). The ``_pg<kk>`` suffix keeps Market-1501 / CUHK03 names parseable (same pid and camera as
  the source) and marks the file as synthetic. Rejected outputs are kept for inspection under
  ``OUT/.posegen/rejected/`` (hidden, so dataset parsers ignore them).
- ``OUT/manifest.parquet``: one row per image, columns :data:`MANIFEST_COLUMNS`: ``path``
  (relative to OUT; ``""`` when no image was written), ``pid``, ``camid``, ``split``,
  ``synthetic``, ``source`` (relative to DIR), ``k`` (1-based target number; 0 for real images and
  for sources skipped for an unusable pose), ``target_pose_source`` (the bank image whose pose was
  the target), ``seed`` (noise seed), the filter's scores — ``oks`` (OKS(target, re-estimated),
  keypoint-box area, 0 when no person found), ``pck`` (PCKh@0.5), ``std`` (pixel std, 0..1),
  ``n_keypoints`` (re-estimated joints), ``identity_sim`` (re-ID cosine to the source),
  ``identity_sim_others`` (mean cosine to the pid's other real train images of DIR),
  ``source_ssim`` (SSIM to the source at the model's resolution), ``source_pose_oks``
  (OKS(source pose, target pose) at the model's resolution), ``hole_fraction``,
  ``seam_fraction``, ``sharpness_ratio``, ``foreign_fraction``, ``invented_fraction`` (image-artifact scores,
  :mod:`posegen.filter.artifacts`),
  ``prior_energy`` (the target pose's prior energy) — NaN when not computed (real images, identity checks without re-ID weights),
  then ``kept``, ``reason``, ``width``, ``height`` (pixels of the written image).
  A real input image that cannot be used (corrupt, empty, not an image, too small, a dangling
  symlink or symlink loop, unreadable) has a real row with ``kept=False`` and a reason starting with
  ``"rejected: "`` (e.g. ``"rejected: unreadable image (not an image file)"``); it is not copied
  into OUT and the run goes on. Images are read upright (EXIF orientation applied); real images
  are copied byte for byte. Sources larger than :data:`SOURCE_MAX_SIDE` pixels are downscaled
  before generation and their outputs written at that size.
- ``OUT/.posegen/``: the run's state: ``run.json`` (settings and notes, e.g. skipped identity
  checks), ``poses.parquet`` (the pose bank: every manifest image and the images of
  :func:`pose_bank_extra`), ``real.parquet`` (the real images copied),
  ``parts/`` (one Parquet per finished batch),
  ``rejected/``, ``report/`` (the report's thumbnails), and ``model-run/`` when a model was
  trained. A run is rebuilt from OUT alone: ``resume=True`` skips finished work.
- Images are scored exactly as written: an output is resized to the source's size and encoded
  (JPEG quality 95 for ``.jpg``) in memory, the decoded pixels are scored and the same bytes are
  written, so :func:`posegen.filter.refilter` on the files reproduces the scores.

DIR is only read. Every file is written atomically. Every random choice derives from ``seed`` and
the source image's path, so a resumed run makes the choices an uninterrupted one makes.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from .. import __version__
from .._io import atomic_to_parquet, atomic_write, atomic_write_bytes, atomic_write_json, shard_of
from .._parallel import Serialized, default_workers, thread_map
from ..data import load_dataset
from ..data.layouts import skipped_images
from ..data.subsets import subsample_union
from ..data.images import read_image
from ..data.layouts import layout_files
from ..pose.extract import POSE_MAX_SIDE
from ..filter.identity import IdentityReference, load_embedder
from ..filter.scores import filter_batch, reason_kind
from ..pose.backends import PoseBackend
from ..pose.extract import extract_poses, usable_poses
from ..pose.formats import new_poses_frame, read_poses, write_poses
from ..pose.keypoints import num_confident, scale_keypoints
from ..recipe import Recipe
from .targets import choose_targets

__all__ = [
    "augment", "synthetic_name", "summarize", "encode_image", "OutputDirError", "MANIFEST_COLUMNS",
    "SCORE_COLUMNS", "with_score_columns", "NO_REID_NOTE", "STATE_DIR", "SOURCE_MAX_SIDE", "INPUT_REJECTED", "written_files", "shard_of",
    "pose_bank_extra", "placed_target", "report_placement",
]  # fmt: skip

STATE_DIR = ".posegen"

#: Source images larger than this (pixels, longest side) are downscaled before generation and
#: scoring; their outputs are written at the downscaled size (memory stays bounded for huge photos).
SOURCE_MAX_SIDE = POSE_MAX_SIDE

#: Prefix of the ``reason`` of a real input image that cannot be used (unreadable, missing, too
#: small): its manifest row has ``kept=False`` and the file is not copied into OUT.
INPUT_REJECTED = "rejected:"

#: Files posegen writes at the top of OUT (besides the images listed in the manifest).
_OWN_FILES = ("manifest.parquet", "report.html", "report-scores.png")  # the last: where older versions put the plot
#: Temporary files of :func:`posegen._io.atomic_write` (``.<name>.<8 random chars>.tmp``).
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")

MANIFEST_COLUMNS = [
    "path", "pid", "camid", "split", "synthetic", "source", "k", "target_pose_source", "seed",
    "oks", "pck", "std", "n_keypoints", "identity_sim", "identity_sim_others", "source_ssim",
    "source_pose_oks", "hole_fraction", "seam_fraction", "sharpness_ratio", "foreign_fraction", "invented_fraction", "prior_energy",
    "kept", "reason", "width", "height",
]  # fmt: skip

#: Score columns of the manifest (NaN when not computed).
SCORE_COLUMNS = [
    "oks", "pck", "std", "identity_sim", "identity_sim_others", "source_ssim", "source_pose_oks",
    "hole_fraction", "seam_fraction", "sharpness_ratio", "foreign_fraction", "invented_fraction", "prior_energy",
]  # fmt: skip


def _honour_check(recipe: Recipe, pose_of: pd.DataFrame):
    """The target test of :func:`choose_targets` (``honour``) for the default model: the two
    pose-only checks of the filter, predicted for a candidate target so that targets the filter
    would reject for them are not drawn. The warp's predicted invented share
    (:func:`posegen.repose.latent.predicted_repair_share`, the source in its 256x128 letterbox frame)
    at most ``augment.honour_invented_fraction`` (else ``filter.max_invented_fraction``), and its
    foreign-part share (:func:`posegen.filter.artifacts.foreign_fraction`, computed at half the
    filter's 256x128 to keep the choice cheap) at most ``augment.honour_foreign_fraction`` (else
    ``filter.max_foreign_fraction``); a check that is off (None) is not tested. The default recipe
    chooses with stricter limits than the filter rejects with (0.12 and 0.01 against 0.2 and 0.04):
    outputs with a visible defect have higher shares (``benchmarks/blind_defects.py``, rounds
    ``tight``, ``tight2``, ``conservative`` and ``conservative2``), and a margin at the choice costs
    the fixed-pair benchmarks nothing.
    With ``augment.avoid_hands_onto_torso``, also no more wrists over the torso than the source
    (:func:`posegen.pose.keypoints.wrists_in_torso`: the warp lays a hanging forearm flat across
    the chest). The checks are made on the pose the model will be asked for: with
    :func:`limb_motion_limits`, the candidate's limbs moved back within them (as
    :func:`placed_target`), so that the choice and the filter see the same target. None when all
    are off."""
    a, f = recipe.augment, recipe.filter
    t_inv = a.honour_invented_fraction if a.honour_invented_fraction is not None else f.max_invented_fraction
    t_for = a.honour_foreign_fraction if a.honour_foreign_fraction is not None else f.max_foreign_fraction
    hands = recipe.augment.avoid_hands_onto_torso
    if t_inv is None and t_for is None and not hands:
        return None
    import torch

    from ..filter.artifacts import WORK_HW, foreign_fractions
    from ..latent import letterbox_params, to_frame_keypoints
    from ..pose.keypoints import scale_keypoints, wrists_in_torso
    from ..repose.latent import FRAME_HW, predicted_repair_share

    min_score = recipe.pose.min_score
    half = (WORK_HW[0] // 2, WORK_HW[1] // 2)

    def honour(src: str, source_kp: np.ndarray, target_kp: np.ndarray) -> np.ndarray:
        size = (int(pose_of.loc[src, "width"]), int(pose_of.loc[src, "height"]))
        tk = _limited_limbs(recipe, source_kp, target_kp)  # the pose the model will be asked for
        ok = np.ones(len(tk), dtype=bool)
        if hands:
            ok &= wrists_in_torso(tk, min_score).sum(1) <= wrists_in_torso(source_kp, min_score).sum()
        if t_inv is not None and ok.any():
            box = letterbox_params(size, FRAME_HW)
            skp = torch.from_numpy(to_frame_keypoints(np.asarray(source_kp, np.float32), box))[None].repeat(len(tk), 1, 1)
            tkp = torch.from_numpy(np.stack([to_frame_keypoints(k, box) for k in tk]))
            inside = torch.from_numpy(np.ascontiguousarray(box.inside_mask()))[None, None].repeat(len(tk), 1, 1, 1)
            ok &= predicted_repair_share(skp, tkp, inside, min_score).numpy() <= t_inv
        if t_for is not None and ok.any():
            sk = scale_keypoints(np.asarray(source_kp, np.float32), size, (half[1], half[0]))
            th = np.stack([scale_keypoints(k, size, (half[1], half[0])) for k in tk[ok]])
            ok[ok] = ~(foreign_fractions(sk, th, half, min_score=min_score) > t_for)  # NaN (no target body) passes
        return ok

    return honour


def limb_motion_limits(recipe: Recipe) -> tuple[float | None, float | None] | None:
    """``(augment.max_arm_motion, augment.max_leg_motion)`` when ``augment.limit_limb_motion`` asks
    for the placed target's limbs to be moved back within them (the default model's
    ``limb_motion_limits``, :func:`posegen.pose.keypoints.limit_limb_motion`), else None."""
    a = recipe.augment
    if not a.limit_limb_motion or (a.max_arm_motion is None and a.max_leg_motion is None):
        return None
    return a.max_arm_motion, a.max_leg_motion


def placed_target(recipe: Recipe, source_kp: np.ndarray, target_kp: np.ndarray) -> np.ndarray:
    """The target pose as ``augment`` asks the default model for it: ``target_kp`` (COCO-17
    ``float [17, 3]``, pixels of its own image) placed on the source person
    (:func:`posegen.repose.warp.align_pose`, translation and uniform scale onto ``source_kp``,
    pixels of the source image) and, with :func:`limb_motion_limits`, each limb moved back within
    them (:func:`posegen.pose.keypoints.limit_limb_motion`, the source paired as the warp pairs it):
    what :class:`~posegen.repose.LatentReposePipeline` does with ``align`` and
    ``limb_motion_limits``. Returns ``float32 [17, 3]`` in source pixels."""
    from ..repose.warp import align_pose

    src = np.array(source_kp, np.float32).reshape(17, 3)  # a writable copy (torch warns on read-only arrays)
    kp = np.asarray(align_pose(np.asarray(target_kp, np.float32).reshape(17, 3), src, min_score=recipe.pose.min_score), np.float32)
    return _limited_limbs(recipe, src, kp[None])[0]


def report_placement(recipe: Recipe, latent: bool):
    """The ``place_target`` of :func:`posegen.report.write_report` for an output of ``recipe``:
    :func:`placed_target` (``source_kp, target_kp -> float32 [17, 3]``, source pixels) when the model
    is the latent (default) family and ``augment.align_targets`` places targets on the source person,
    else None (the report draws the bank pose). Used by ``augment`` and ``posegen filter`` alike."""
    if not (latent and recipe.augment.align_targets):
        return None
    return lambda source_kp, target_kp: placed_target(recipe, source_kp, target_kp)


def _limited_limbs(recipe: Recipe, source_kp: np.ndarray, placed_kp: np.ndarray) -> np.ndarray:
    """``placed_kp`` (``float [N, 17, 3]``, targets already placed on the source person, source
    pixels) with each limb moved back within :func:`limb_motion_limits` (unchanged when they are
    off), the source (``float [17, 3]``) paired as the warp pairs it
    (:func:`posegen.repose.warp.limit_placed_limbs`). Returns ``float32 [N, 17, 3]``."""
    limits = limb_motion_limits(recipe)
    if limits is None:
        return np.array(placed_kp, np.float32).reshape(-1, 17, 3)
    from ..repose.warp import limit_placed_limbs

    return limit_placed_limbs(source_kp, placed_kp, *limits, min_score=recipe.pose.min_score)


def _limb_preference(recipe: Recipe):
    """The target preference of :func:`choose_targets` (``prefer``) for the default model: with
    ``augment.max_arm_motion`` / ``max_leg_motion``, targets that move no elbow or wrist (knee or
    ankle) farther than that many source torso lengths (:func:`posegen.pose.keypoints.joint_motion`,
    the source paired as the warp pairs it, :func:`posegen.repose.warp.view_matched_source`) come
    first, then those beyond one limit, then those beyond both (the rank: how many limits a target
    exceeds, ``int64 [N]``); a limb with no joint in common counts as within its limit. The warp
    drags what lies beside a moved forearm or shin along and leaves a hole where it was; by eye,
    kept outputs showed a defect about 2 times in 10 within both limits of 0.25 / 0.3, 5 beyond one, 7
    beyond both, and tighter limits and honour margins (the default recipe's 0.2 / 0.2) cut the share
    further (``benchmarks/blind_defects.py``, rounds 1-3 and 14-15). None when both are off."""
    limits = [(t, j) for t, j in ((recipe.augment.max_arm_motion, "arms"), (recipe.augment.max_leg_motion, "legs")) if t is not None]
    if not limits:
        return None
    from ..pose.keypoints import ARM_JOINTS, LEG_JOINTS, joint_motion
    from ..repose.warp import view_matched_source

    min_score = recipe.pose.min_score
    joints = {"arms": ARM_JOINTS, "legs": LEG_JOINTS}

    def prefer(src: str, source_kp: np.ndarray, target_kp: np.ndarray) -> np.ndarray:
        tk = np.asarray(target_kp, np.float32).reshape(-1, 17, 3)
        sk = np.repeat(np.asarray(source_kp, np.float32).reshape(1, 17, 3), len(tk), 0)
        paired = view_matched_source(sk, tk, min_score=min_score).numpy()
        over = np.zeros(len(tk), dtype=np.int64)
        for t, limb in limits:
            over += joint_motion(paired, tk, joints[limb], min_score) > t  # NaN (no shared joint) is within
        return over

    return prefer


def with_score_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every :data:`SCORE_COLUMNS` column it lacks added as NaN (a manifest or part file
    written before that score existed: ``augment --resume`` and ``posegen filter`` read it)."""
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    return df.assign(**{c: np.nan for c in missing}) if missing else df


#: Note recorded in run.json (and printed by the CLI) when the identity checks are skipped.
NO_REID_NOTE = (
    "identity checks skipped: no re-ID weights (recipe filter.reid_weights or --reid-weights); "
    "identity_sim and identity_sim_others are NaN"
)

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
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"OUT ({out}) exists and is not a folder: choose a folder path for --out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputDirError(f"cannot create OUT ({out}): {parent} is not a folder")
            break


def _read_run_json(path: Path) -> dict | None:
    """The run record, or None when it is missing or unreadable (e.g. a run killed while writing it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_tmp_files(out: Path) -> int:
    """Delete leftovers of interrupted atomic writes (``.<name>.<random>.tmp``) under OUT; their count."""
    n = 0
    for dirpath, _, files in os.walk(out):
        for f in files:
            if _TMP_NAME.match(f):
                Path(dirpath, f).unlink(missing_ok=True)
                n += 1
    return n


def _holds_nothing_of_value(out: Path) -> bool:
    """True if every file under OUT is posegen state without a usable run record.

    That is: all files are under ``OUT/.posegen/`` and are temporary leftovers or a run record
    that cannot be read — what a run killed while writing its first ``run.json`` leaves.
    """
    run_json = out / STATE_DIR / "run.json"
    if _read_run_json(run_json) is not None:
        return False
    for dirpath, _, files in os.walk(out):
        d = Path(dirpath)
        for f in files:
            p = d / f
            if not p.is_relative_to(out / STATE_DIR):
                return False
            if p != run_json and not _TMP_NAME.match(f):
                return False
    return True


def written_files(out: str | os.PathLike) -> list[Path]:
    """The files of OUT that posegen augment wrote, as recorded in OUT itself.

    These are the images listed in ``OUT/manifest.parquet`` and in the run's part files, the real
    images it planned to copy (``OUT/.posegen/real.parquet``), ``manifest.parquet``,
    ``report.html`` (and ``report-scores.png`` of older versions). The ``OUT/.posegen/`` state folder is posegen's too
    (not listed). Only existing files are returned, sorted.
    """
    out = Path(out)
    state = out / STATE_DIR
    rel: set[str] = set(_OWN_FILES)
    tables = [out / "manifest.parquet", state / "real.parquet", *sorted((state / "parts").glob("part-*.parquet"))]
    for t in tables:
        try:
            rel.update(p for p in pd.read_parquet(t, columns=["path"])["path"].astype(str) if p)
        except Exception:  # noqa: BLE001 - a missing or unreadable table lists nothing
            continue
    files = []
    for r in rel:
        p = out / r
        if p.is_relative_to(out) and ".." not in Path(r).parts and (p.is_file() or p.is_symlink()):
            files.append(p)
    return sorted(files)


def _remove_own_output(out: Path) -> None:
    """Delete what posegen wrote in OUT (:func:`written_files` and ``.posegen/``), nothing else;
    folders left empty by that are removed too."""
    dirs: set[Path] = set()
    for p in written_files(out):
        p.unlink(missing_ok=True)
        dirs.update(q for q in p.parents if q.is_relative_to(out) and q != out)
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    for d in sorted(dirs, key=lambda q: len(q.parts), reverse=True):  # deepest first
        try:
            d.rmdir()
        except OSError:
            pass  # not empty: it holds files posegen did not write


def _upgraded_settings(before: dict) -> dict:
    """A run record as today's posegen would write it for the same recipe: its ``recipe`` dump is
    read through today's :class:`~posegen.recipe.Recipe`, so a field added to the recipe since the
    run started takes its default and does not count as a changed setting on resume. A new field's
    default keeps the earlier behaviour (the rule every recipe field follows), and a recipe that
    sets it otherwise (a resumed run's ``--recipe`` YAML naming the new field) still differs. A dump
    today's model cannot read (a field removed or renamed) is left as it is, and so differs."""
    from pydantic import ValidationError

    saved = before.get("recipe")
    if not isinstance(saved, dict):
        return before
    try:
        return {**before, "recipe": Recipe.model_validate(saved).model_dump(mode="json")}
    except ValidationError:
        return before


def _prepare_out(out: Path, settings: dict, resume: bool, overwrite: bool) -> None:
    run_json = out / STATE_DIR / "run.json"
    if out.exists() and any(out.iterdir()):
        if _holds_nothing_of_value(out):  # e.g. killed while writing the first run.json: start afresh
            shutil.rmtree(out / STATE_DIR, ignore_errors=True)
        elif overwrite:
            if _read_run_json(run_json) is None:
                raise OutputDirError(
                    f"{out} is not empty and was not written by posegen augment (no readable {STATE_DIR}/run.json): "
                    "refusing to delete it; choose another --out"
                )
            _remove_own_output(out)
        elif resume:
            before = _read_run_json(run_json)
            if before is None:
                raise OutputDirError(f"cannot resume: {run_json} not found or unreadable")
            before = _upgraded_settings(before)
            diff = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if diff:
                raise OutputDirError(
                    f"cannot resume {out}: settings differ from the interrupted run in {diff}; "
                    "use the same options or --overwrite"
                )
            _remove_tmp_files(out)
        else:
            raise OutputDirError(f"{out} is not empty: pass --resume to continue a run or --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_json, settings)


def _copy_file(src: Path, dst: Path) -> None:
    if not dst.exists():
        atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _input_rejection(pose_reason: str) -> str | None:
    """The manifest reason of a real input image its pose stage could not read, else None.

    ``"unreadable: not an image file"`` -> ``"rejected: unreadable image (not an image file)"``;
    likewise ``"missing: ..."`` and ``"too small: ..."``.
    """
    kind, _, detail = str(pose_reason).partition(":")
    label = {"unreadable": "unreadable image", "missing": "missing image", "too small": "image too small"}.get(kind)
    if label is None:
        return None
    return f"{INPUT_REJECTED} {label} ({detail.strip()})" if detail.strip() else f"{INPUT_REJECTED} {label}"


def _check_model(pipe, recipe: Recipe, scheduler: str | None, explicit_scheduler: str | None) -> None:
    """Validate the model against the run's settings before OUT is touched.

    Raises:
        ValueError: unknown scheduler name, a scheduler the latent model cannot use, or a pixel-space
            model whose resolution differs from the recipe's (its filter thresholds would apply to
            the wrong size).
    """
    from ..repose import make_scheduler

    latent = bool(getattr(pipe, "returns_source_size", False)) if pipe is not None else recipe.latent is not None
    if latent:
        if explicit_scheduler is not None and explicit_scheduler.lower() != "ddim":
            raise ValueError(f"the latent model samples with ddim only, got scheduler {explicit_scheduler!r}")
        return
    make_scheduler(scheduler, getattr(getattr(pipe, "scheduler", None), "config", None))  # raises for a bad name
    if pipe is not None and tuple(pipe.resolution) != tuple(recipe.model.resolution):
        h, w = tuple(pipe.resolution)
        rh, rw = tuple(recipe.model.resolution)
        raise ValueError(
            f"the model generates {h}x{w} images but recipe {recipe.name!r} is for {rh}x{rw} "
            "(its filter thresholds are calibrated at that size): pass the recipe the model was trained with"
        )


def _load_model(model: str | os.PathLike | None, device: str = "cpu"):
    from ..repose import load_pipeline

    if model is None:
        return load_pipeline(None, device=device)  # the default model shipped with posegen
    model = Path(model)
    if (model / "model" / "model_index.json").exists():  # a training run folder
        model = model / "model"
    return load_pipeline(model, device=device)


def _prior_energies(keypoints: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, float | None]:
    """Prior energy of each pose ``[B, 17, 3]`` (pixels) and the plausibility threshold.

    Returns ``(float64 [B], threshold)``; all NaN and None when ``recipe.augment.use_prior`` is off.
    """
    if not recipe.augment.use_prior:
        return np.full(len(keypoints), np.nan), None
    from ..prior import load_pose_prior

    prior = load_pose_prior()
    energy = np.asarray(prior.score(np.asarray(keypoints, dtype=np.float32)), dtype=np.float64) if len(keypoints) else np.zeros(0)
    t = recipe.augment.prior_threshold
    return energy, float(prior.config.threshold if t is None else t)


@dataclass
class _Scorer:
    """Everything needed to score generated images of one run (shared by augment and refilter).

    ``sources_root`` holds the real source images (DIR, or OUT's copies); ``pose_of`` is the pose
    bank indexed by path; ``frame_hw`` the model's ``(height, width)``.
    """

    recipe: Recipe
    backend: PoseBackend
    pose_of: pd.DataFrame
    sources_root: Path
    frame_hw: tuple[int, int]
    embedder: object = None
    reference: IdentityReference | None = None
    #: the latent model places each target pose on the source person (``align_pose``): score
    #: against the pose placed the same way when no ``target_keypoints`` are given
    align_targets: bool = False

    def score(
        self, images: list[np.ndarray], sources: list[str], targets: list[str], pids: list[int], energies,
        target_keypoints: np.ndarray | None = None, source_images: list[np.ndarray] | None = None,
    ) -> pd.DataFrame:
        """:func:`filter_batch` of images written for ``sources[i]`` re-posed to ``targets[i]``'s pose.

        ``images[i]`` is ``uint8 [H, W, 3]`` at the source's size, or a non-finite float array.
        ``target_keypoints`` (``float32 [N, 17, 3]``, pixels of each target's own image) replaces
        the pose bank's target poses: the poses the sampler actually used when prior guidance
        moved them (see :class:`~posegen.repose.ReposePipeline`). ``source_images`` are the decoded
        sources (``uint8 [H, W, 3]``) when the caller has them; otherwise they are read from
        ``sources_root``.
        """
        src_imgs, src_kp, tgt_kp, src_emb, others = [], [], [], [], []
        for i, (img, src, tgt, pid) in enumerate(zip(images, sources, targets, pids)):
            if source_images is None:
                src_img = read_image(self.sources_root / src, max_side=SOURCE_MAX_SIDE)
            else:
                src_img = source_images[i]
            src_imgs.append(src_img)
            src_kp.append(_source_keypoints(self.pose_of, src, src_img))
            h, w = np.asarray(img).shape[:2]
            tsize = (int(self.pose_of.loc[tgt, "width"]), int(self.pose_of.loc[tgt, "height"]))
            kp = self.pose_of.loc[tgt, "keypoints"] if target_keypoints is None else target_keypoints[i]
            if self.align_targets and target_keypoints is None:  # as LatentReposePipeline places it
                kp = placed_target(self.recipe, src_kp[-1], kp)  # source pixels
            else:
                kp = scale_keypoints(kp, tsize, (w, h))
            tgt_kp.append(kp)
            if self.reference is not None:
                e = self.reference.embedding(src)
                src_emb.append(np.full(self.reference.dim, np.nan, np.float32) if e is None else e)
                others.append(self.reference.others(src, pid))
        return filter_batch(
            images, src_imgs, np.stack(src_kp), np.stack(tgt_kp), self.recipe.filter, self.backend,
            embedder=self.embedder, source_embeddings=np.stack(src_emb) if src_emb else None,
            others_embeddings=others if self.reference is not None else None,
            min_score=self.recipe.pose.min_score, frame_hw=self.frame_hw, prior_energy=energies,
        )  # fmt: skip


def _source_keypoints(pose_of: pd.DataFrame, src: str, image: np.ndarray) -> np.ndarray:
    """The pose bank's keypoints of ``src`` in pixels of ``image`` (its possibly downscaled decode)."""
    kp = pose_of.loc[src, "keypoints"]
    size = (int(pose_of.loc[src, "width"]), int(pose_of.loc[src, "height"]))
    h, w = np.asarray(image).shape[:2]
    return kp if size == (w, h) else scale_keypoints(kp, size, (w, h))


def _identity_reference(embedder, dataset: pd.DataFrame, root: Path, sources: pd.DataFrame):
    if embedder is None:
        return None
    return IdentityReference(embedder, dataset, root, pids=set(sources["pid"]), extra_paths=sources["path"])


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
    real_fraction: float | None = None,
    subset_seeds: tuple[int, ...] | None = None,
    splits: tuple[str, ...] = ("train",),
    num_inference_steps: int | None = None,
    scheduler: str | None = None,
    train_steps: int | None = None,
    reid_weights: str | os.PathLike | None = None,
    report_rows: int = 200,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
    barrier: Callable[[], None] | None = None,
    poll_s: float = 2.0,
    device: str = "cpu",
    workers: int | None = None,
) -> pd.DataFrame:
    """Augment a dataset folder with re-posed images of its identities.

    Args:
        root: the dataset folder DIR (any layout :func:`posegen.data.load_dataset` reads).
        out: the output folder OUT (created; must not overlap DIR).
        recipe: validated recipe (sampler, pose thresholds, filter thresholds, K, the pose prior,
            and the training recipe used when no model is given).
        backend: pose backend for the pose bank and for re-estimating poses on outputs.
        model: a trained model (a ``posegen train`` run folder or its ``model/`` pipeline folder);
            None = the default model shipped with posegen, unless ``train_steps`` is given: then a
            model of ``recipe`` (pixel-space recipes only) is trained on DIR first, under
            ``OUT/.posegen/model-run``.
        layout: force a layout instead of auto-detection.
        seed: run seed; all choices and noises derive from it and the source paths.
        k: target poses per source (default ``recipe.augment.k``).
        limit: use only the first ``limit`` images (sorted by path) of the chosen splits — a trial
            run on a subset; the re-posed and copied real images are restricted to them (the
            identity check against the pid's other images still uses all of DIR's train split), and
            target poses to them plus, with ``recipe.augment.pose_bank_size``, the next images'
            poses (:func:`pose_bank_extra`).
        real_fraction: re-pose only this fraction of the chosen splits' images (at least one per
            identity), the nested subset :func:`posegen.data.subsets.subsample_real` draws: exactly
            the real images ``posegen eval-downstream --real-fraction F --seeds S`` trains on, so
            every synthetic image comes from an image the real arm also has. Applied before
            ``limit``. None: every image.
        subset_seeds: the draw seeds of ``real_fraction`` (the union of their subsets is used);
            default ``(seed,)``.
        splits: splits whose images are re-posed (query/gallery images are copied, never re-posed).
        num_inference_steps, scheduler: sampler overrides (default ``recipe.sample``).
        train_steps: with ``model=None``, train ``recipe``'s model on DIR for this many steps
            first (never implicit).
        reid_weights: re-ID embedder ONNX file for the identity checks (overrides
            ``recipe.filter.reid_weights``); when neither is given the checks are skipped, their
            scores are NaN and ``run.json`` says so in ``notes``. Never downloaded.
        report_rows: most rows of ``report.html`` (kept and rejected both represented).
        resume: continue an interrupted run in OUT (settings must match); leftover temporary
            files of interrupted writes are removed.
        overwrite: replace a previous posegen output in OUT: only the files posegen wrote
            (:func:`written_files`) and ``OUT/.posegen/`` are deleted, anything else is kept.
            An OUT holding only a run record that could not be written completely (a run killed
            while writing its first ``run.json``) is started afresh, with or without these flags.
        progress: ``progress(stage, done, total)`` with stage ``"poses"``, ``"train"``, ``"copy"``,
            ``"identity"``, ``"generate"`` or (sharded) ``"wait"`` (shards finished / all).
        shard: ``(index, count)``: run as shard ``index`` of ``count`` processes (e.g. under
            ``accelerate launch``). Each shard estimates the poses of, and copies, the images
            whose :func:`shard_of` is its index, and generates the batches ``b`` with
            ``b % count == index`` (batches are cut from the run's whole target list exactly as in
            one process); it writes its own pose file and part files under ``OUT/.posegen/`` and
            a marker when done. Shard 0 prepares OUT, waits for every shard's marker (polling
            every ``poll_s`` seconds, no time limit) and writes the merged manifest and report:
            the same content one process writes for the same settings. A killed launch resumes
            with ``resume=True`` and the same ``count``: finished shards skip their work. None or
            ``(0, 1)``: one process.
        barrier: with ``shard``, a callable all shards call together (e.g.
            ``accelerate.PartialState().wait_for_everyone``): shards other than 0 wait at it
            until shard 0 has prepared OUT. Required when ``count > 1``.
        poll_s: seconds between two looks for other shards' markers.
        device: where the re-posing model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); noises
            are drawn on the CPU, so the choices do not depend on it (the pixels may differ by
            floating-point rounding between devices).
        workers: with the default (latent) model, how many batches (and, in the target choice,
            sources) are worked on at once, each in its own thread with its share of torch's threads
            (:func:`posegen._parallel.thread_map`): the pose backend, the scoring and the image
            encoding of a batch run on one core, which bounds one batch at a time. None:
            :func:`posegen._parallel.default_workers` (torch's thread count on the CPU, 1 on a GPU).
            The outputs do not depend on it (each image has its own seeded noise), up to
            floating-point rounding between thread counts; a resumed run may use another value.
            Pixel-space models always run one batch at a time.

    Returns:
        The output manifest (also written to ``OUT/manifest.parquet``), columns
        :data:`MANIFEST_COLUMNS`.

    Raises:
        OutputDirError: OUT is not empty (without resume/overwrite), overlaps DIR, or a resumed
            run's settings differ.
        posegen.data.LayoutError: DIR's layout is unknown or it has no images.
        FileNotFoundError: ``model`` or ``reid_weights`` does not exist.
        ValueError: ``k`` or ``limit`` below 1, an unreadable model or re-ID file, an unknown
            scheduler, or a pixel-space model whose resolution differs from ``recipe.model.resolution``.

    Every check above happens before OUT is touched, so a corrected rerun is never refused.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    _check_dirs(root, out)
    idx, n_shards = shard if shard is not None else (0, 1)
    if not (int(n_shards) >= 1 and 0 <= int(idx) < int(n_shards)):
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    idx, n_shards = int(idx), int(n_shards)
    if n_shards > 1 and barrier is None:
        raise ValueError("a sharded augment needs a barrier (e.g. accelerate's PartialState().wait_for_everyone)")
    if n_shards > 1 and model is None and train_steps is not None:
        raise ValueError("a sharded augment does not train (train_steps): train with `posegen train`, then pass --model")
    progress = progress or (lambda stage, done, total: None)
    k = recipe.augment.k if k is None else int(k)
    if k < 1:
        raise ValueError(f"k (target poses per source) must be at least 1, got {k}")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be at least 1 image, got {limit}")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    steps = num_inference_steps or recipe.sample.steps
    sched = scheduler or recipe.sample.scheduler
    reid = reid_weights if reid_weights is not None else recipe.filter.reid_weights
    reid = None if reid is None else str(reid)
    reid = str(Path(reid).expanduser().resolve()) if reid not in (None, "colour-histogram") else reid
    settings = dict(
        root=str(root), layout=layout, model=str(Path(model).resolve()) if model else None,
        recipe=recipe.model_dump(mode="json"), backend=backend.name, seed=seed, k=k, limit=limit,
        real_fraction=real_fraction, subset_seeds=None if real_fraction is None else sorted(set(subset_seeds or (seed,))),
        splits=list(splits), steps=steps, scheduler=sched, train_steps=train_steps, version=__version__,
        reid_weights=reid, notes=[] if reid else [NO_REID_NOTE],
    )  # fmt: skip
    if n_shards > 1:
        settings["shards"] = n_shards
    # Check the inputs before touching OUT.
    if real_fraction is not None and not (0.0 < float(real_fraction) <= 1.0):
        raise ValueError(f"--real-fraction must be in (0, 1], got {real_fraction}")
    dataset = load_dataset(root, layout)
    skipped_names = skipped_images(dataset)
    if skipped_names:
        settings["notes"] = settings["notes"] + [
            f"{len(skipped_names)} image files of DIR do not follow the {dataset.attrs['layout']} naming and were "
            f"not used (e.g. {', '.join(skipped_names[:3])})"
        ]
    if model is not None and not Path(model).exists():
        raise FileNotFoundError(f"model not found: {model}")
    if model is None and train_steps is not None and recipe.latent is not None:
        raise ValueError("augment trains only pixel-space recipes (train_steps); train a latent recipe with `posegen train`")
    embedder = load_embedder(reid)
    pipe = _load_model(model, device) if model is not None or train_steps is None else None  # None: the shipped default
    _check_model(pipe, recipe, sched, scheduler)
    settings["model_kind"] = "latent" if getattr(pipe, "returns_source_size", False) else "pixel"
    from ..repose.pipeline import default_model_dir
    from ..repose.provenance import model_folder, read_provenance, write_provenance

    model_dir = default_model_dir() if model is None and train_steps is None else (model_folder(model) if model else None)
    card, digests = read_provenance(model_dir) if model_dir is not None else (None, None)
    settings["model_card"] = card is not None
    if n_shards == 1:
        _prepare_out(out, settings, resume, overwrite)
    else:  # shard 0 prepares OUT while the others wait
        error = None
        if idx == 0:
            try:
                _prepare_out(out, settings, resume, overwrite)
            except Exception as e:  # noqa: BLE001 - re-raised after the barrier, so no shard hangs
                error = e
        barrier()
        if error is not None:
            raise error
        if _read_run_json(out / STATE_DIR / "run.json") != json.loads(json.dumps(settings, default=str)):
            raise OutputDirError(f"shard {idx}: the main process could not prepare {out} (see its error)")
    state = out / STATE_DIR
    mine = (lambda rel: True) if n_shards == 1 else (lambda rel: shard_of(rel, n_shards) == idx)
    if idx == 0:  # what the generator was trained on travels with the output (eval-downstream's leak check)
        write_provenance(state, card, digests)

    dataset = dataset[~dataset["synthetic"]].reset_index(drop=True)
    manifest = dataset
    if real_fraction is not None:
        pool = manifest[manifest["split"].isin(splits)]
        chosen = subsample_union(pool, real_fraction, settings["subset_seeds"])
        manifest = manifest[~manifest["split"].isin(splits) | manifest["path"].isin(chosen["path"])].reset_index(drop=True)
    pool = manifest
    if limit is not None:
        chosen = manifest[manifest["split"].isin(splits)].head(limit)
        manifest = manifest[manifest["path"].isin(chosen["path"])].reset_index(drop=True)
    # images whose poses only widen the pose bank (recipe augment.pose_bank_size): neither re-posed nor copied
    bank_only = pose_bank_extra(pool, manifest, splits, recipe.augment.pose_bank_size)
    pose_rows = pd.concat([manifest, bank_only], ignore_index=True) if len(bank_only) else manifest

    # 1. poses (the bank), resumable; sharded: each shard its own images, then all shards' files
    if n_shards == 1:
        poses = extract_poses(
            pose_rows, root, backend, out=state / "poses.parquet", progress=lambda d, t: progress("poses", d, t)
        )
    else:
        own = pose_rows[[mine(p) for p in pose_rows["path"]]]
        extract_poses(own, root, backend, out=_shard_file(state, "poses", idx, n_shards, ".parquet"),
                      progress=lambda d, t: progress("poses", d, t))  # fmt: skip
        _sync(state, "poses", idx, n_shards, {}, poll_s, progress)
        poses = _merged_poses(pose_rows, state, n_shards)
        if idx == 0:
            write_poses(poses, state / "poses.parquet")
    pose_of = poses.set_index("path")
    usable = usable_poses(poses, min_score=recipe.pose.min_score, min_keypoints=recipe.pose.min_keypoints)
    usable_paths = set(poses.loc[usable, "path"])
    # real images that cannot be read (corrupt, empty, not an image, too small, dangling link, ...)
    in_manifest = set(manifest["path"])
    bad_inputs = {
        p: why for p, r in zip(poses["path"], poses["reason"]) if p in in_manifest and (why := _input_rejection(r)) is not None
    }

    # 2. copy the real images (the enlarged dataset contains them), byte for byte; unreadable ones
    # are not copied (their manifest row says why). The planned copies are recorded first so that
    # --overwrite knows which files posegen wrote. Sharded: each shard its own images, and every
    # shard learns the others' copy failures before choosing targets.
    to_copy = [rel for rel in manifest["path"] if rel not in bad_inputs]
    # a layout's own files travel too (e.g. deepfashion's list_eval_partition.txt), so OUT reads back
    to_copy += [rel for rel in layout_files(root, dataset.attrs["layout"]) if rel not in set(to_copy)]
    if idx == 0:
        atomic_to_parquet(pd.DataFrame({"path": pd.Series(to_copy, dtype=str)}), state / "real.parquet")
    own_copies = [rel for rel in to_copy if mine(rel)]
    failed: dict[str, str] = {}
    progress("copy", 0, len(own_copies))
    for i, rel in enumerate(own_copies, 1):
        try:
            _copy_file(root / rel, out / rel)
        except OSError as e:  # e.g. permission denied: reject the image, the run goes on
            failed[rel] = f"{INPUT_REJECTED} unreadable image ({e.strerror or type(e).__name__})"
        progress("copy", i, len(own_copies))
    if n_shards > 1:
        for part in _sync(state, "copy", idx, n_shards, {"failed": failed}, poll_s, progress):
            failed.update(part["failed"])
    bad_inputs.update(failed)
    usable_paths -= set(failed)

    # 3. the model: the given one, the shipped default, or (train_steps given) one trained on DIR
    if pipe is None:
        from ..repose import train

        run_dir = state / "model-run"
        model_dir = train(
            recipe, manifest, poses, root, run_dir, steps=train_steps,
            progress=lambda step, total, logs: progress("train", step, total),
        )  # fmt: skip
        pipe = _load_model(model_dir, device)
    latent_model = bool(getattr(pipe, "returns_source_size", False))
    if not latent_model:
        from ..repose import make_scheduler

        pipe.scheduler = make_scheduler(sched, pipe.scheduler.config)
    if recipe.augment.plausible_only:
        usable_paths &= _plausible_paths(poses, recipe)
    # batches (and target choices) at once, in threads: the default (latent) pipeline is re-entrant;
    # the pose backend (a LiteRT interpreter is not thread-safe) is called by one thread at a time
    n_workers = (default_workers(device) if workers is None else int(workers)) if latent_model else 1
    scoring_backend = Serialized(backend) if n_workers > 1 else backend

    # 4. targets: the pose bank, minus the poses the prior finds implausible
    meta = manifest.set_index("path")
    is_source = manifest["split"].isin(splits)
    sources = manifest[is_source & manifest["path"].isin(usable_paths)]
    bank = pose_rows[pose_rows["path"].isin(usable_paths)].copy()
    energy, max_energy = _prior_energies(np.stack(pose_of.loc[bank["path"], "keypoints"].to_list()) if len(bank) else np.zeros((0, 17, 3)), recipe)
    bank["prior_energy"] = energy
    if recipe.augment.match_view or recipe.augment.target_pose_oks is not None:
        bank["keypoints"] = pose_of.loc[bank["path"], "keypoints"].to_list()
        sources = sources.assign(keypoints=pose_of.loc[sources["path"], "keypoints"].to_list())
    tasks = choose_targets(
        sources, bank, k=k, seed=seed, other_pids=recipe.augment.target_from_other_pids, max_energy=max_energy,
        match_view=recipe.augment.match_view, view_tolerance=recipe.augment.view_tolerance,
        min_score=recipe.pose.min_score, pose_oks_range=recipe.augment.target_pose_oks,
        honour=_honour_check(recipe, pose_of) if latent_model else None,
        prefer=_limb_preference(recipe) if latent_model else None, workers=n_workers,
    )  # fmt: skip
    # the rows rejected before generation go last, so that every batch but the last generates
    # batch_size images (the order depends only on the choice, so shards and resumes agree)
    tasks = pd.concat([tasks[tasks["reason"] == ""], tasks[tasks["reason"] != ""]], ignore_index=True)

    # identity references: every source, and the source pids' real train images of DIR
    progress("identity", 0, 1)
    scorer = _Scorer(
        recipe, scoring_backend, pose_of, root, tuple(pipe.resolution), embedder,
        _identity_reference(embedder, dataset, root, sources),
        align_targets=latent_model and recipe.augment.align_targets,
    )  # fmt: skip
    progress("identity", 1, 1)

    # 5-7. generate, filter, write — batch by batch, batch b's rows saved as part-<b>.parquet. The
    # batches are cut from the whole task list (the same in every shard and in one process); a
    # shard generates the batches b with b % shards == its index; a finished batch is skipped.
    parts_dir = state / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    bs = recipe.sample.batch_size
    batches = [b for b in range(0, (len(tasks) + bs - 1) // bs) if b % n_shards == idx]
    todo_batches = [b for b in batches if not (parts_dir / f"part-{b:06d}.parquet").exists()]
    total = sum(min(bs, len(tasks) - b * bs) for b in batches)
    done_n = total - sum(min(bs, len(tasks) - b * bs) for b in todo_batches)
    todo = tasks.iloc[[i for b in todo_batches for i in range(b * bs, min((b + 1) * bs, len(tasks)))]]
    progress("generate", done_n, total)
    if latent_model:
        guidance = dict(
            strength=recipe.sample.strength, start=recipe.sample.start, align=recipe.augment.align_targets,
            repair_only=recipe.sample.repair_only, repair_strength=recipe.sample.repair_strength,
            turned_head=recipe.sample.turned_head, person_masks=recipe.sample.person_masks,
            limb_motion_limits=limb_motion_limits(recipe) if recipe.augment.align_targets else None,
        )  # fmt: skip
    else:
        guidance = _guidance(recipe) if len(todo) else {}

    def run_batch(b: int) -> int:
        batch = tasks.iloc[b * bs : (b + 1) * bs]
        rows = _generate_batch(batch, pipe, root, out, pose_of, meta, scorer, steps, guidance)
        atomic_to_parquet(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), parts_dir / f"part-{b:06d}.parquet")
        return len(batch)

    for _, n_done in thread_map(run_batch, todo_batches, n_workers):
        done_n += n_done
        progress("generate", done_n, total)
    if n_shards > 1:
        _mark(state, "generate", idx, n_shards, {})
        if idx != 0:  # shard 0 merges; this shard returns its own rows
            own = [parts_dir / f"part-{b:06d}.parquet" for b in batches]
            return pd.concat([pd.read_parquet(p) for p in own], ignore_index=True) if own else pd.DataFrame(columns=MANIFEST_COLUMNS)
        _wait(state, "generate", n_shards, poll_s, progress)

    # 8. the output manifest: real images, synthetic images (kept and rejected), unusable sources
    part_files = sorted(parts_dir.glob("part-*.parquet"))
    synthetic = pd.concat([with_score_columns(pd.read_parquet(p)) for p in part_files], ignore_index=True) if part_files else None
    real = _real_rows(manifest, pose_of, bad_inputs)
    skipped = manifest[is_source & ~manifest["path"].isin(usable_paths) & ~manifest["path"].isin(bad_inputs)]
    skipped_rows = [
        _row(src, meta, k=0, path="", kept=False, reason=_unusable_reason(pose_of.loc[src], recipe))
        for src in skipped["path"]
    ]
    frames = [real, pd.DataFrame(skipped_rows, columns=MANIFEST_COLUMNS)]
    if synthetic is not None:
        frames.insert(1, synthetic)
    result = pd.concat([f for f in frames if len(f)], ignore_index=True)[MANIFEST_COLUMNS]
    atomic_to_parquet(result, out / "manifest.parquet")

    # 9. the visual report
    from ..report import write_report

    write_report(
        out, result, recipe, prior_threshold=max_energy, rows=report_rows, seed=seed, notes=settings["notes"],
        place_target=report_placement(recipe, latent_model),
    )  # fmt: skip
    return result


def _shard_file(state: Path, stage: str, idx: int, n: int, suffix: str) -> Path:
    return state / "shards" / f"{stage}-{idx:04d}-of-{n:04d}{suffix}"


def _mark(state: Path, stage: str, idx: int, n: int, payload: dict) -> None:
    """Record that shard ``idx`` finished ``stage`` (a small JSON marker with ``payload``)."""
    atomic_write_json(_shard_file(state, stage, idx, n, ".done.json"), payload)


def _wait(state: Path, stage: str, n: int, poll_s: float, progress: Progress) -> list[dict]:
    """Wait (no time limit) until every shard marked ``stage`` done; their payloads, by shard."""
    files = [_shard_file(state, stage, j, n, ".done.json") for j in range(n)]
    seen = -1
    while True:
        ready = [f for f in files if f.exists()]
        if len(ready) != seen:
            seen = len(ready)
            progress("wait", seen, n)
        if len(ready) == n:
            return [json.loads(f.read_text()) for f in files]
        time.sleep(poll_s)


def _sync(state: Path, stage: str, idx: int, n: int, payload: dict, poll_s: float, progress: Progress) -> list[dict]:
    """Mark ``stage`` done for shard ``idx`` and wait for every shard; their payloads."""
    _mark(state, stage, idx, n, payload)
    return _wait(state, stage, n, poll_s, progress)


def _merged_poses(manifest: pd.DataFrame, state: Path, n: int) -> pd.DataFrame:
    """The pose bank of ``manifest`` from every shard's pose file, in manifest order."""
    frames = [read_poses(_shard_file(state, "poses", j, n, ".parquet")) for j in range(n)]
    frames = [f for f in frames if len(f)]
    poses = pd.concat(frames, ignore_index=True) if frames else new_poses_frame([])
    order = {p: i for i, p in enumerate(manifest["path"])}
    poses = poses[poses["path"].isin(order)].drop_duplicates("path", keep="last")
    return poses.sort_values("path", key=lambda c: c.map(order)).reset_index(drop=True)


def _plausible_paths(poses: pd.DataFrame, recipe: Recipe) -> set[str]:
    """Paths whose pose passes :func:`posegen.pose.plausibility.pose_plausibility` (ok poses only)."""
    from ..pose.plausibility import pose_plausibility

    ok = poses[poses["status"] == "ok"]
    if not len(ok):
        return set()
    kp = np.stack(ok["keypoints"].to_list()).astype(np.float32)
    sizes = np.stack([ok["width"].to_numpy(), ok["height"].to_numpy()], 1)
    good, _ = pose_plausibility(kp, sizes, min_score=recipe.pose.min_score, min_keypoints=recipe.pose.min_keypoints)
    return set(ok["path"][good])


def pose_bank_extra(pool: pd.DataFrame, manifest: pd.DataFrame, splits, size: int | None) -> pd.DataFrame:
    """The images that widen a trial run's pose bank (recipe ``augment.pose_bank_size``).

    ``augment --limit N`` re-poses the first ``N`` images of the chosen ``splits``; the target poses
    are drawn from the poses of its images plus, when they number fewer than ``size``, the next
    images of ``pool`` (the dataset's images before the limit, after ``real_fraction``; rows of
    :func:`posegen.data.load_dataset`) in the chosen splits, in ``pool``'s order, until ``size``. Their
    poses are estimated and stored in the pose bank (``OUT/.posegen/poses.parquet``); they are not
    re-posed, copied or listed in the manifest (an unreadable one is only left out of the bank).
    A larger bank lets more sources find targets that move the limbs little: on the README main job
    (120 images, ``size`` 720) the share of generated targets within both limb-motion limits rose
    from 36 % to 68 %, and among the rows whose outputs changed the kept ones with a visible defect,
    counted blind, fell from 56 % to 29 % (``benchmarks/results/blind_defects-bank.md``; over all
    kept outputs the defect share did not measurably change, see the README).

    Returns:
        The rows of ``pool`` to add (possibly none), ``pool``'s columns. ``size`` None: none.
    """
    if size is None:
        return pool.iloc[:0]
    taken = set(manifest["path"])
    n_sources = int(manifest["split"].isin(splits).sum())
    rest = pool[pool["split"].isin(splits) & ~pool["path"].isin(taken)]
    return rest.head(max(0, int(size) - n_sources)).reset_index(drop=True)


def _real_rows(manifest: pd.DataFrame, pose_of: pd.DataFrame, bad_inputs: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per real image: kept, or (``bad_inputs``: path -> reason) rejected and not copied."""
    n = len(manifest)
    nan = np.full(n, np.nan)
    bad_inputs = bad_inputs or {}
    reasons = [bad_inputs.get(p, "") for p in manifest["path"]]
    return pd.DataFrame(
        {
            "path": manifest["path"], "pid": manifest["pid"], "camid": manifest["camid"],
            "split": manifest["split"], "synthetic": False, "source": manifest["path"], "k": 0,
            "target_pose_source": "", "seed": -1, **{c: nan for c in SCORE_COLUMNS}, "n_keypoints": -1,
            "kept": [not r for r in reasons], "reason": reasons, "width": pose_of.loc[manifest["path"], "width"].to_numpy(),
            "height": pose_of.loc[manifest["path"], "height"].to_numpy(),
        }
    )[MANIFEST_COLUMNS]  # fmt: skip


def _unusable_reason(pose_row: pd.Series, recipe: Recipe) -> str:
    if pose_row["status"] != "ok":
        return f"source pose unavailable: {pose_row['reason']}"
    n = num_confident(pose_row["keypoints"], recipe.pose.min_score)
    if n < recipe.pose.min_keypoints:
        return f"source pose has {n} keypoints (< {recipe.pose.min_keypoints})"
    from ..pose.plausibility import pose_plausibility

    _, why = pose_plausibility(
        np.asarray(pose_row["keypoints"], np.float32), (int(pose_row["width"]), int(pose_row["height"])),
        min_score=recipe.pose.min_score, min_keypoints=recipe.pose.min_keypoints,
    )  # fmt: skip
    return f"implausible source pose: {why[0]}"


def _row(source: str, meta: pd.DataFrame, **fields) -> dict:
    m = meta.loc[source]
    row = dict(
        path="", pid=int(m["pid"]), camid=int(m["camid"]), split=str(m["split"]), synthetic=True,
        source=source, k=0, target_pose_source="", seed=-1, **{c: np.nan for c in SCORE_COLUMNS},
        n_keypoints=-1, kept=False, reason="", width=-1, height=-1,
    )  # fmt: skip
    row.update(fields)
    return row


def encode_image(image: Image.Image, suffix: str) -> bytes:
    """Encode an image as posegen writes it (format from ``suffix``; JPEG quality 95).

    Args:
        image: a PIL RGB image.
        suffix: the file extension (``".jpg"``, ``".png"``, ...), case-insensitive.

    Returns:
        The encoded bytes (deterministic for a given image).
    """
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}.get(suffix.lower(), "PNG")
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _generate_batch(batch, pipe, root, out, pose_of, meta, scorer: _Scorer, steps, guidance: dict) -> list[dict]:
    import torch

    rows: dict[int, dict] = {}
    # rows rejected before generation (implausible target pose, or one the warp cannot honour): no image
    gen = []
    for j, (src, kk, tgt, s, e, reason) in enumerate(
        zip(batch["source"], batch["k"], batch["target"], batch["seed"], batch["prior_energy"], batch["reason"])
    ):
        if reason:
            rows[j] = _row(src, meta, k=int(kk), target_pose_source=tgt, seed=int(s), prior_energy=float(e), reason=reason)
        else:
            gen.append(j)
    if gen:
        images, src_kp, tgt_kp, tgt_sizes, gens = [], [], [], [], []
        cache: dict[str, np.ndarray] = {}
        for j in gen:
            src, tgt, s = batch["source"].iloc[j], batch["target"].iloc[j], batch["seed"].iloc[j]
            if src not in cache:
                cache[src] = read_image(root / src, max_side=SOURCE_MAX_SIDE)
            images.append(cache[src])
            src_kp.append(_source_keypoints(pose_of, src, cache[src]))
            tgt_kp.append(pose_of.loc[tgt, "keypoints"])
            tgt_sizes.append((int(pose_of.loc[tgt, "width"]), int(pose_of.loc[tgt, "height"])))
            gens.append(torch.Generator().manual_seed(int(s)))
        latent_model = bool(getattr(pipe, "returns_source_size", False))
        # the sampler may move the target joints (prior guidance, alignment onto the source
        # person): score against the pose it used
        used = latent_model or guidance.get("prior_guidance_scale", 0.0) > 0
        result = pipe(
            source_images=images, source_keypoints=np.stack(src_kp), target_keypoints=np.stack(tgt_kp),
            target_sizes=tgt_sizes, num_inference_steps=steps, generator=gens,
            output_type="np" if latent_model else "pt", return_keypoints=used, **guidance,
        )  # fmt: skip
        result, used_kp = result if used else (result, None)
        if latent_model:  # uint8 images at each source's size
            outputs = [np.asarray(r, dtype=np.float32) / 255.0 for r in result]
        else:
            outputs = ((result.float().cpu() + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()  # [B, h, w, 3] in [0, 1]
        scored, data = [], []
        for i, j in enumerate(gen):
            h, w = images[i].shape[:2]
            raw = outputs[i]
            if np.isfinite(raw).all():
                u8 = np.clip(np.round(raw * 255.0), 0, 255).astype(np.uint8)
                img = Image.fromarray(u8)
                if img.size != (w, h):
                    img = img.resize((w, h), Image.BICUBIC)  # back to the source's size
                b = encode_image(img, Path(batch["source"].iloc[j]).suffix)
                scored.append(_decode(b))  # scored exactly as written (see the module docstring)
                data.append(b)
            else:
                scored.append(raw)
                data.append(None)
        sub = batch.iloc[gen]
        sc = scorer.score(
            scored, list(sub["source"]), list(sub["target"]), [int(meta.loc[s, "pid"]) for s in sub["source"]],
            sub["prior_energy"].to_numpy(dtype=np.float64), target_keypoints=used_kp, source_images=images,
        )
        for i, j in enumerate(gen):
            src, kk, tgt, s = sub["source"].iloc[i], sub["k"].iloc[i], sub["target"].iloc[i], sub["seed"].iloc[i]
            r = sc.iloc[i]
            h, w = images[i].shape[:2]
            name = synthetic_name(src, int(kk))
            rel = name if r["kept"] else f"{STATE_DIR}/rejected/{name}"
            if data[i] is not None:
                atomic_write_bytes(out / rel, data[i])
            else:
                rel = ""
            rows[j] = _row(
                src, meta, path=rel, k=int(kk), target_pose_source=tgt, seed=int(s),
                **{c: float(r[c]) for c in SCORE_COLUMNS}, n_keypoints=int(r["n_keypoints"]),
                kept=bool(r["kept"]), reason=str(r["reason"]), width=w, height=h,
            )  # fmt: skip
    return [rows[j] for j in range(len(batch))]


def _guidance(recipe: Recipe) -> dict:
    """The sampler's guidance settings from ``recipe.sample`` (prior guidance uses the shipped prior)."""
    s = recipe.sample
    g = {"pose_guidance_scale": s.pose_guidance, "appearance_guidance_scale": s.appearance_guidance}
    if s.prior_guidance > 0:
        from ..prior import load_pose_prior

        g.update(pose_prior=load_pose_prior(), prior_guidance_scale=s.prior_guidance)
    return g


def summarize(manifest: pd.DataFrame) -> dict:
    """Counts of an augment manifest.

    Returns:
        ``{"real": n, "rejected_inputs": n, "rejected_inputs_by_reason": {reason: n}, "generated": n,
        "kept": n, "rejected": n, "rejected_by_reason": {reason: n}, "mean_oks_kept": float,
        "mean_identity_kept": float}`` (``real`` counts the real images kept (copied);
        ``rejected_inputs`` the real input images that could not be used (unreadable, missing,
        too small: reason ``"rejected: ..."``); ``generated`` counts rows with a target, ``k > 0``,
        including those rejected before generation; ``kept``/``rejected`` count synthetic rows;
        sources skipped for an unusable pose count as rejected with their reason; reasons are
        grouped by :func:`reason_kind`; means are NaN when undefined).
    """
    syn = manifest[manifest["synthetic"]]
    real = manifest[~manifest["synthetic"]]
    bad = real[~real["kept"].astype(bool)]
    gen = syn[syn["k"] > 0]
    rejected = syn[~syn["kept"]]
    kept = syn[syn["kept"]]

    def mean(col):
        v = kept[col].dropna() if col in kept else []
        return float(v.mean()) if len(v) else float("nan")

    return {
        "real": int(len(real) - len(bad)),
        "rejected_inputs": int(len(bad)),
        "rejected_inputs_by_reason": {str(r): int(n) for r, n in bad["reason"].value_counts().items()},
        "generated": int(len(gen)),
        "kept": int(len(kept)),
        "rejected": int(len(rejected)),
        "rejected_by_reason": {str(r): int(n) for r, n in rejected["reason"].map(reason_kind).value_counts().items()},
        "mean_oks_kept": mean("oks"),
        "mean_identity_kept": mean("identity_sim"),
    }
