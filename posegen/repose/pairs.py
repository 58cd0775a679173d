"""Training pairs: (source, target) images of the same identity, and a torch Dataset over them.

Pose-guided person image generation is trained on pairs of images of the same person in two poses:
the model sees the source image and both poses and learns to produce the target image (PATN, PIDM,
Bhunia et al. 2023). :func:`make_pairs` builds every ordered pair from a manifest and its poses;
:class:`PairDataset` serves them as model-ready tensors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from posegen._io import stable_seed
from posegen.data.images import read_image
from posegen.pose.extract import usable_poses
from posegen.pose.keypoints import flip_keypoints, scale_keypoints, validate_keypoints

from .render import render_pose, resize_image

__all__ = ["make_pairs", "PairDataset"]

log = logging.getLogger(__name__)


def make_pairs(
    manifest: pd.DataFrame,
    poses: pd.DataFrame,
    *,
    min_score: float,
    min_keypoints: int,
    splits: tuple[str, ...] | list[str] | None = ("train",),
) -> pd.DataFrame:
    """Every ordered pair of distinct images of the same identity with usable poses.

    Args:
        manifest: columns ``path`` (relative to the dataset root), ``pid``, ``split``.
        poses: columns ``path`` (same key), ``keypoints`` (``float32 [17, 3]``), ``status``.
        min_score: a joint counts as present at this score.
        min_keypoints: a pose (with status "ok") with fewer present joints is not used.
        splits: manifest splits to use (None: all).

    Returns:
        DataFrame ``source`` (str), ``target`` (str), ``pid`` (int64): for every pid, all
        ``(a, b)`` with ``a != b``, sorted by ``(pid, source, target)``; index ``0..n-1``. Empty
        (with those columns) when there is none.

    Raises:
        ValueError: a required column is missing.
    """
    for col in ("path", "pid"):
        if col not in manifest.columns:
            raise ValueError(f"manifest lacks column {col!r}")
    m = manifest
    if splits is not None:
        if "split" not in m.columns:
            raise ValueError("manifest lacks column 'split' (pass splits=None to use every row)")
        m = m[m["split"].astype(str).isin([str(s) for s in splits])]
    p = poses.drop_duplicates("path", keep="first")
    good = p[usable_poses(p, min_score=min_score, min_keypoints=min_keypoints)]
    m = m[m["path"].astype(str).isin(set(good["path"].astype(str)))]
    m = m[["path", "pid"]].drop_duplicates("path").copy()
    m["path"] = m["path"].astype(str)
    m["pid"] = m["pid"].astype(np.int64)
    rows_s, rows_t, rows_p = [], [], []
    for pid, grp in m.groupby("pid", sort=True):
        paths = sorted(grp["path"])
        for a in paths:
            for b in paths:
                if a != b:
                    rows_s.append(a)
                    rows_t.append(b)
                    rows_p.append(int(pid))
    out = pd.DataFrame(
        {
            "source": pd.Series(rows_s, dtype=object),
            "target": pd.Series(rows_t, dtype=object),
            "pid": pd.Series(rows_p, dtype=np.int64),
        }
    )
    return out.sort_values(["pid", "source", "target"], kind="mergesort").reset_index(drop=True)


class PairDataset(Dataset):
    """Model-ready (source, target) pairs.

    Every image used by a pair is decoded once (:func:`~posegen.data.images.read_image`), resized
    to the model resolution (plain bicubic) and kept in memory as ``uint8`` (``h * w * 3`` bytes per
    image: about 24 kB at 128x64, fine for re-ID datasets). Keypoints are mapped to the model frame
    with :func:`~posegen.pose.keypoints.scale_keypoints` using the poses frame's ``width``/``height``.

    Random horizontal flip: source and target are flipped independently, each with probability
    ``flip_prob``; a flipped image gets :func:`~posegen.pose.keypoints.flip_keypoints` (x mirrored and
    left/right joints swapped). The flips of item ``idx`` in epoch ``e`` are drawn from
    ``stable_seed(seed, "flip", e, idx)``, so they do not depend on workers or on resuming.

    Args:
        root: dataset root the pair paths are relative to.
        pairs: frame from :func:`make_pairs` (``source``, ``target``).
        poses: poses frame (``path``, ``width``, ``height``, ``keypoints``).
        model_cfg: the recipe's :class:`~posegen.recipe.ModelConfig` (resolution, pose_sigma,
            limb_width).
        flip_prob: probability of flipping each image.
        seed: base seed for the flips.
        min_score: joint presence threshold for the pose maps (the recipe's ``pose.min_score``).

    Items (``dataset[idx]`` or ``dataset.get(idx, epoch)``) are dicts of tensors:
        ``source``, ``target``: ``float32 [3, h, w]`` in ``[-1, 1]``;
        ``source_pose``, ``target_pose``: ``float32 [36, h, w]`` in ``[0, 1]``;
        ``source_keypoints``, ``target_keypoints``: ``float32 [17, 3]`` COCO-17 ``(x, y, score)``
        in pixels of the model frame (``w x h``), flipped with their image (the pose maps are
        rendered from exactly these), as the pose-aligned and focal conditioning need them.

    Raises:
        ValueError: a pair's image has no pose row.
        posegen.data.images.ImageReadError: an image cannot be decoded (names the file).
    """

    def __init__(
        self,
        root: str | Path,
        pairs: pd.DataFrame,
        poses: pd.DataFrame,
        model_cfg,
        flip_prob: float = 0.5,
        seed: int = 0,
        *,
        min_score: float = 0.5,
    ):
        self.root = Path(root)
        self.pairs = pairs.reset_index(drop=True)
        self.resolution = (int(model_cfg.resolution[0]), int(model_cfg.resolution[1]))
        self.sigma = float(model_cfg.pose_sigma)
        self.limb_width = float(model_cfg.limb_width)
        self.min_score = float(min_score)
        self.flip_prob = float(flip_prob)
        self.seed = int(seed)
        self.epoch = 0
        self._src = self.pairs["source"].astype(str).tolist()
        self._tgt = self.pairs["target"].astype(str).tolist()
        paths = sorted(set(self._src) | set(self._tgt))
        by_path = poses.drop_duplicates("path", keep="first").copy()
        by_path.index = by_path["path"].astype(str)
        missing = [p for p in paths if p not in by_path.index]
        if missing:
            raise ValueError(f"{len(missing)} paired image(s) have no pose row, e.g. {missing[0]!r}")
        h, w = self.resolution
        self._images: dict[str, np.ndarray] = {}
        self._kp: dict[str, np.ndarray] = {}  # keypoints in the model frame
        for p in paths:
            img = read_image(self.root / p)
            row = by_path.loc[p]
            width = int(row["width"]) if "width" in row and pd.notna(row["width"]) else img.shape[1]
            height = int(row["height"]) if "height" in row and pd.notna(row["height"]) else img.shape[0]
            if (width, height) != (img.shape[1], img.shape[0]):
                log.warning(
                    "%s: poses say %dx%d but the image is %dx%d; using the poses' size for keypoints",
                    p, width, height, img.shape[1], img.shape[0],
                )
            self._images[p] = np.array(resize_image(img, (h, w)), copy=True)
            kp = validate_keypoints(row["keypoints"])
            self._kp[p] = scale_keypoints(kp, (width, height), (w, h))
        log.debug("PairDataset: %d pairs over %d images cached", len(self.pairs), len(paths))

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by ``dataset[idx]`` for its flips."""
        self.epoch = int(epoch)

    def _item(self, path: str, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = self.resolution
        img = self._images[path]
        kp = self._kp[path]
        if flip:
            img = img[:, ::-1]
            kp = flip_keypoints(kp, w)
        pose = render_pose(kp, (w, h), (h, w), self.sigma, self.limb_width, self.min_score)
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1.0
        return t, torch.from_numpy(pose), torch.from_numpy(np.array(kp, dtype=np.float32, copy=True))

    def image(self, path: str) -> np.ndarray:
        """The cached ``uint8 [h, w, 3]`` image of ``path`` at the model resolution (not flipped)."""
        return self._images[str(path)]

    def keypoints(self, path: str) -> np.ndarray:
        """``float32 [17, 3]`` keypoints of ``path`` in pixels of the model frame (not flipped)."""
        return self._kp[str(path)]

    def get(self, idx: int, epoch: int = 0, *, augment: bool = True) -> dict[str, torch.Tensor]:
        """Item ``idx`` with the flips of epoch ``epoch`` (see the class docstring); no flip if
        ``augment`` is False."""
        idx = int(idx)
        if not 0 <= idx < len(self):
            raise IndexError(f"pair index {idx} out of range [0, {len(self)})")
        rng = np.random.default_rng(stable_seed(self.seed, "flip", int(epoch), idx))
        fs, ft = rng.random(2) < self.flip_prob
        if not augment:
            fs = ft = False
        src, src_pose, src_kp = self._item(self._src[idx], bool(fs))
        tgt, tgt_pose, tgt_kp = self._item(self._tgt[idx], bool(ft))
        return {
            "source": src,
            "target": tgt,
            "source_pose": src_pose,
            "target_pose": tgt_pose,
            "source_keypoints": src_kp,
            "target_keypoints": tgt_kp,
        }

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return self.get(idx, self.epoch)
