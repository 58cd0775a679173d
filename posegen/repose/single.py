"""Re-pose one image: the library side of ``posegen repose``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._io import atomic_save_image
from ..data.images import read_image
from ..pose.backends import DEFAULT_BACKEND, get_backend
from ..pose.formats import read_poses

__all__ = ["repose_one", "KEYPOINT_SUFFIXES"]

#: Files with these extensions are read as keypoint files; anything else as an image.
KEYPOINT_SUFFIXES = (".parquet", ".csv", ".json")


def _target_from_file(path: Path, name: str | None) -> tuple[np.ndarray, tuple[int, int] | None, str]:
    poses = read_poses(path)
    if name is not None:
        rows = poses[(poses["path"] == name) | (poses["path"].map(lambda p: Path(p).name) == name)]
        if rows.empty:
            raise ValueError(f"no pose named {name!r} in {path}")
    else:
        rows = poses[poses["status"] == "ok"]
        if rows.empty:
            raise ValueError(f"{path} has no usable pose")
    row = rows.iloc[0]
    if row["status"] != "ok":
        raise ValueError(f"pose {row['path']!r} in {path} is unusable: {row['reason']}")
    size = (int(row["width"]), int(row["height"])) if int(row["width"]) > 0 else None
    return row["keypoints"], size, str(row["path"])


def repose_one(
    model: str | os.PathLike,
    source: str | os.PathLike,
    target_pose: str | os.PathLike,
    out: str | os.PathLike,
    *,
    target_name: str | None = None,
    target_size: tuple[int, int] | None = None,
    steps: int | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    backend: str = DEFAULT_BACKEND,
    pose_guidance_scale: float | None = None,
    appearance_guidance_scale: float | None = None,
    device: str = "cpu",
) -> dict:
    """Generate the person of ``source`` in the pose of ``target_pose`` and save it to ``out``.

    Args:
        model: a ``posegen train`` run folder or its ``model/`` pipeline folder.
        source: source image file.
        target_pose: an image (its pose is estimated) or a keypoints file (``.parquet``, ``.csv``
            Pose-Transfer, ``.json`` COCO) whose row ``target_name`` (or first usable row) is used.
        out: output image (written atomically, at the source image's size).
        target_name: row of the keypoints file (matched on its path or file name).
        target_size: ``(width, height)`` of the image the target keypoints were measured on, for
            keypoint files that do not record it (Pose-Transfer CSVs); default: the source's size.
        steps: sampling steps (default: ``sample.steps`` of the model's ``recipe.yaml``, else 20).
        scheduler: sampler name (see :data:`posegen.repose.SCHEDULERS`); None keeps the model's
            saved sampler (its recipe's ``sample.scheduler``).
        seed: noise seed.
        backend: pose backend name used for the source (and for a target given as an image); default
            ``"auto"`` (:data:`~posegen.pose.backends.DEFAULT_BACKEND`).
        pose_guidance_scale, appearance_guidance_scale: guidance scales passed to the pipeline
            when not None (default: the model recipe's ``sample.pose_guidance`` /
            ``sample.appearance_guidance`` when the recipe has them, else the pipeline's own).
        device: torch device to sample on (``"cpu"``, ``"cuda"``).

    Returns:
        ``{"width", "height", "target"}`` of the written image.

    Raises:
        FileNotFoundError: model, source or target file missing (named).
        ValueError: no person in the source/target image, no usable target row, or a guidance
            scale the pipeline does not accept.
        posegen.data.ImageReadError: the source image cannot be read.
    """
    from . import load_pipeline
    from ..pose.backends import NoPersonFound
    from .batch import _guidance_kwargs, model_sample_config, resolve_model_dir

    model = resolve_model_dir(model)
    source, target_pose = Path(source), Path(target_pose)
    for p in (model, source, target_pose):
        if not p.exists():
            raise FileNotFoundError(f"not found: {p}")
    sample = model_sample_config(model)
    model = resolve_model_dir(model)
    pipe = load_pipeline(model, scheduler=scheduler, device=device)
    if pose_guidance_scale is None:
        pose_guidance_scale = getattr(sample, "pose_guidance", None)
    if appearance_guidance_scale is None:
        appearance_guidance_scale = getattr(sample, "appearance_guidance", None)
    extra = _guidance_kwargs(pipe, pose_guidance_scale, appearance_guidance_scale)
    steps = steps or (sample.steps if sample is not None else 20)
    src_img = read_image(source)
    h, w = src_img.shape[:2]
    with get_backend(backend) as be:
        try:
            src_kp = be.estimate(src_img)
        except NoPersonFound:
            raise ValueError(f"no person found in the source image {source}") from None
        if target_pose.suffix.lower() in KEYPOINT_SUFFIXES:
            tgt_kp, size, label = _target_from_file(target_pose, target_name)
            size = size or target_size or (w, h)
        else:
            tgt_img = read_image(target_pose)
            try:
                tgt_kp = be.estimate(tgt_img)
            except NoPersonFound:
                raise ValueError(f"no person found in the target image {target_pose}") from None
            size, label = (tgt_img.shape[1], tgt_img.shape[0]), str(target_pose)
    gen = torch.Generator().manual_seed(seed)
    result = pipe(
        source_images=[src_img], source_keypoints=src_kp[None], target_keypoints=np.asarray(tgt_kp)[None],
        target_sizes=[size], num_inference_steps=steps, generator=[gen], output_type="np", **extra,
    )  # fmt: skip
    images = result.images if hasattr(result, "images") else result
    img = Image.fromarray(np.asarray(images[0])).resize((w, h), Image.BICUBIC)
    atomic_save_image(img, out)
    return {"width": w, "height": h, "target": label}
