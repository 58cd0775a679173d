"""Nested real-fraction subsets of a training split, shared by ``augment`` and ``eval-downstream``.

``posegen augment --real-fraction F --seed S`` must re-pose exactly the real images that
``posegen eval-downstream --real-fraction F --seeds S`` trains its arms on, so that every synthetic
image comes from an image the real arm also has. Both call :func:`subsample_real` on the same
manifest rows (:func:`posegen.data.load_dataset`); the draw depends only on each identity's set of
file paths *relative to its identity folder order* (the path order within a pid), so DIR may be the
dataset root or its train sub-folder (CUHK03 ``detected/`` vs ``detected/train``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from .._io import stable_seed

__all__ = ["subsample_real", "subsample_union"]


def subsample_real(train: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Keep ``fraction`` of the real training images, at least one per identity.

    Per pid with ``n`` images, ``max(1, floor(fraction * n + 0.5))`` images are kept: the first ones of a
    permutation seeded by :func:`posegen._io.stable_seed` ``(seed, "real-fraction", pid)`` of the
    pid's images in path order, so the draw is reproducible, independent of the other pids and of
    the row order, and nested (the images kept at 0.2 are among those kept at 0.4 for the same seed).
    A common path prefix (``train/``) does not change the draw.

    Args:
        train: real training manifest rows (``path``: str, ``pid``: int, ...).
        fraction: in ``(0, 1]``.
        seed: draw seed.

    Returns:
        The kept rows, in the input's order (index reset).

    Raises:
        ValueError: ``fraction`` outside ``(0, 1]``.
    """
    if not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"real fraction must be in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return train.reset_index(drop=True)
    keep = np.zeros(len(train), dtype=bool)
    positions = np.arange(len(train))
    for pid, idx in train.groupby("pid", sort=True).indices.items():
        n_keep = max(1, int(np.floor(float(fraction) * len(idx) + 0.5)))
        rng = np.random.default_rng(stable_seed(int(seed), "real-fraction", int(pid)))
        ordered = positions[idx][np.argsort(train["path"].to_numpy()[idx], kind="stable")]
        keep[rng.permutation(ordered)[:n_keep]] = True
    return train[keep].reset_index(drop=True)


def subsample_union(train: pd.DataFrame, fraction: float, seeds: Iterable[int]) -> pd.DataFrame:
    """The union of :func:`subsample_real` over several seeds (input order, index reset).

    ``augment --real-fraction 0.2 --subset-seeds 0,1,2`` re-poses this set once, and each
    ``eval-downstream --real-fraction 0.2`` run of seed 0, 1 or 2 uses the synthetic images of its
    own subset, which lies inside it.

    Raises:
        ValueError: ``fraction`` outside ``(0, 1]`` or no seed.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one subset seed")
    kept: set[str] = set()
    for s in seeds:
        kept |= set(subsample_real(train, fraction, s)["path"])
    return train[train["path"].isin(kept)].reset_index(drop=True)
