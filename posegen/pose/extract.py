"""Pose extraction over a dataset: resumable, atomic, one failure reason per image.

:func:`extract_poses` runs a :class:`~posegen.pose.backends.PoseBackend` over every image of a
manifest and returns a poses DataFrame (see :mod:`posegen.pose.formats` for its columns). When
given an output file it saves progress atomically every ``save_every`` images and, on a re-run,
skips the images already in the file, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..data.images import ImageReadError, read_image_fit
from .backends import NoPersonFound, PoseBackend
from .formats import new_poses_frame, read_poses, write_poses
from .keypoints import empty_keypoints, num_confident, scale_keypoints

__all__ = ["extract_poses", "estimate_one", "pose_summary", "usable_poses", "POSE_MAX_SIDE"]

#: Images larger than this (pixels, longest side) are downscaled before pose estimation; the
#: keypoints are mapped back to the file's full size. Keeps memory bounded for huge photos.
POSE_MAX_SIDE = 2048


def estimate_one(backend: PoseBackend, image_path: str | os.PathLike) -> dict:
    """Estimate the pose of one image file; never raises for a bad image.

    Args:
        backend: the pose backend.
        image_path: the image file.

    Images larger than :data:`POSE_MAX_SIDE` are estimated on a downscaled copy (EXIF orientation
    applied); keypoints, ``width`` and ``height`` are in pixels of the full upright image.

    Returns:
        A dict with ``width``, ``height`` (pixels; -1 if unreadable), ``keypoints``
        (``float32 [17, 3]``, zeros on failure), ``status`` (``"ok"``/``"failed"``) and ``reason``
        (``""``, ``"unreadable: ..."``, ``"missing: ..."``, ``"too small: ..."``,
        ``"no person found"`` or ``"pose backend error: ..."``).
    """
    try:
        image, (w, h) = read_image_fit(image_path, max_side=POSE_MAX_SIDE)
    except ImageReadError as e:
        return dict(width=-1, height=-1, keypoints=empty_keypoints(), status="failed", reason=e.reason)
    ih, iw = image.shape[:2]
    try:
        kp = backend.estimate(image)
        if (iw, ih) != (w, h):  # estimated on a downscaled copy: back to the file's pixels
            kp = scale_keypoints(kp, (iw, ih), (w, h))
    except NoPersonFound:
        return dict(width=w, height=h, keypoints=empty_keypoints(), status="failed", reason="no person found")
    except Exception as e:  # a backend crash on one image must not stop the run
        return dict(
            width=w, height=h, keypoints=empty_keypoints(), status="failed",
            reason=f"pose backend error: {type(e).__name__}: {e}",
        )
    return dict(width=w, height=h, keypoints=kp, status="ok", reason="")


def extract_poses(
    manifest: pd.DataFrame,
    root: str | os.PathLike,
    backend: PoseBackend,
    *,
    out: str | os.PathLike | None = None,
    save_every: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Estimate COCO-17 keypoints for every image of a manifest.

    Args:
        manifest: DataFrame with a ``path`` column (relative to ``root``).
        root: dataset root folder.
        backend: the pose backend (its ``name`` and ``weights`` are recorded in each row).
        out: optional output file (``.parquet``, ``.csv`` or ``.json``, see
            :func:`posegen.pose.formats.write_poses`). If it exists, images already listed in it are
            skipped (resume); progress is written to it atomically every ``save_every`` images
            and at the end.
        save_every: images between two saves of ``out``.
        progress: called as ``progress(done, total)`` after each image (and once at the start).

    Returns:
        The poses DataFrame for the manifest's images, in manifest order (columns ``path, width,
        height, keypoints, status, reason, backend, weights``).

    Raises:
        ValueError: ``manifest`` has no ``path`` column, ``out`` has an unsupported extension,
            ``out`` is a ``.csv`` (keyed by file name) and two images share a file name, or a
            ``.parquet`` ``out`` holds poses of another backend, which a resume would mix in (all
            checked before any work).
    """
    if "path" not in manifest.columns:
        raise ValueError("manifest needs a 'path' column")
    root = Path(root)
    paths = list(dict.fromkeys(manifest["path"].astype(str)))
    csv_out = out is not None and Path(out).suffix.lower() == ".csv"
    if csv_out:  # Pose-Transfer CSVs are keyed by file name: refuse clashes before any work
        by_name: dict[str, list[str]] = {}
        for p in paths:
            by_name.setdefault(posixpath.basename(p), []).append(p)
        clash = {n: ps for n, ps in by_name.items() if len(ps) > 1}
        if clash:
            n, ps = next(iter(clash.items()))
            raise ValueError(
                f"{len(clash)} file names occur in several folders (e.g. {n!r}: {ps[:2]}); a Pose-Transfer CSV "
                f"is keyed by file name: write .parquet or .json instead"
            )
    previous = read_poses(out) if out is not None and Path(out).exists() else new_poses_frame([])
    if csv_out and len(previous):  # CSV rows hold file names: back to the manifest's paths
        full = {posixpath.basename(p): p for p in paths}
        previous = previous.assign(path=[full.get(n, n) for n in previous["path"].astype(str)])
    if len(previous) and Path(out).suffix.lower() == ".parquet":  # only Parquet records the backend
        others = sorted({str(b) for b in previous["backend"].dropna() if str(b) and str(b) != backend.name})
        if others:
            raise ValueError(
                f"{out} holds poses made with {', '.join(others)}; this run uses {backend.name}: resume with the "
                f"same backend or write to another file"
            )
    done = set(previous["path"])
    todo = [p for p in paths if p not in done]
    total, n_done = len(paths), len(paths) - len(todo)
    rows: list[dict] = []

    def snapshot() -> pd.DataFrame:
        frame = pd.concat([previous, new_poses_frame(rows)], ignore_index=True) if rows else previous
        return frame.drop_duplicates("path", keep="last").reset_index(drop=True)

    if progress:
        progress(n_done, total)
    for i, rel in enumerate(todo, 1):
        row = estimate_one(backend, root / rel)
        row.update(path=rel, backend=backend.name, weights=backend.weights)
        rows.append(row)
        if progress:
            progress(n_done + i, total)
        if out is not None and i % save_every == 0:
            write_poses(snapshot(), out)
    result = snapshot()
    if out is not None and (rows or not Path(out).exists()):
        write_poses(result, out)
    order = {p: i for i, p in enumerate(paths)}
    result = result[result["path"].isin(order)]
    return result.sort_values("path", key=lambda s: s.map(order)).reset_index(drop=True)


def usable_poses(poses: pd.DataFrame, *, min_score: float, min_keypoints: int) -> pd.Series:
    """Boolean mask (aligned with ``poses.index``) of the poses good enough to be a source or target.

    A pose is usable when its ``status`` is ``"ok"`` and it has at least ``min_keypoints`` joints
    with ``score >= min_score``.

    Raises:
        ValueError: ``poses`` lacks a ``keypoints`` or ``status`` column.
    """
    missing = {"keypoints", "status"} - set(poses.columns)
    if missing:
        raise ValueError(f"poses frame lacks columns {sorted(missing)}")
    ok = poses["status"].astype(str).eq("ok").to_numpy()
    n = np.array([num_confident(k, min_score) for k in poses["keypoints"]], dtype=np.int64)
    return pd.Series(ok & (n >= min_keypoints), index=poses.index)


def pose_summary(poses: pd.DataFrame, min_score: float = 0.5) -> dict:
    """Counts for a poses DataFrame.

    Returns:
        ``{"images", "ok", "failed", "failed_by_reason": {reason: n}, "mean_confident",
        "share_ge12"}`` where ``mean_confident`` is the mean number of joints with score >=
        ``min_score`` over ok images and ``share_ge12`` the share of ok images with >= 12 of them.
    """
    ok = poses[poses["status"] == "ok"]
    if len(ok):
        n_conf = np.array([num_confident(k, min_score) for k in ok["keypoints"]])
        mean_conf, share12 = float(n_conf.mean()), float((n_conf >= 12).mean())
    else:
        mean_conf, share12 = 0.0, 0.0
    failed = poses[poses["status"] != "ok"]
    reasons = failed["reason"].str.split(":").str[0].value_counts().to_dict() if len(failed) else {}
    return {
        "images": int(len(poses)),
        "ok": int(len(ok)),
        "failed": int(len(failed)),
        "failed_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "mean_confident": mean_conf,
        "share_ge12": share12,
    }
