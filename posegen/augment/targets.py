"""Choosing target poses for each source image from the dataset's own pose bank."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._io import stable_seed

__all__ = ["choose_targets"]


def choose_targets(
    sources: pd.DataFrame,
    bank: pd.DataFrame,
    *,
    k: int,
    seed: int,
    other_pids: bool = True,
) -> pd.DataFrame:
    """Draw ``k`` target poses for every source image.

    Each source's draw is seeded by ``(seed, source path)`` alone, so it does not depend on which
    other sources are in the run (a resumed or partial run makes the same choices).

    Args:
        sources: DataFrame with ``path`` and ``pid`` of the images to re-pose.
        bank: DataFrame with ``path`` and ``pid`` of the usable target poses (see
            :func:`usable_poses`); sorted internally by path for determinism.
        k: targets per source.
        seed: run seed.
        other_pids: draw from other identities' images when there are any (otherwise, or as a
            fallback, from any other image). A source's own image is never its target.

    Returns:
        DataFrame ``source, k, target, seed`` with ``k`` rows per source that has at least one
        candidate (``k`` is 1-based; ``seed`` is the per-image generation seed). Draws are without
        replacement while there are enough candidates.
    """
    bank = bank.sort_values("path").reset_index(drop=True)
    bank_paths = bank["path"].to_numpy()
    bank_pids = bank["pid"].to_numpy()
    rows = []
    for src, pid in zip(sources["path"], sources["pid"]):
        cand = bank_paths != src
        if other_pids and (cand & (bank_pids != pid)).any():
            cand &= bank_pids != pid
        idx = np.flatnonzero(cand)
        if len(idx) == 0:
            continue
        rng = np.random.default_rng(stable_seed(seed, src, "targets"))
        pick = rng.choice(idx, size=k, replace=len(idx) < k)
        for j, t in enumerate(pick, 1):
            rows.append((src, j, bank_paths[t], stable_seed(seed, src, j, "noise") % (2**31)))
    return pd.DataFrame(rows, columns=["source", "k", "target", "seed"])
