"""Choosing target poses for each source image from the dataset's own pose bank."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._io import stable_seed
from ..filter.scores import IMPLAUSIBLE_TARGET

__all__ = ["choose_targets", "TARGET_COLUMNS"]

#: Columns of :func:`choose_targets`' result.
TARGET_COLUMNS = ["source", "k", "target", "seed", "prior_energy", "reason"]


def choose_targets(
    sources: pd.DataFrame,
    bank: pd.DataFrame,
    *,
    k: int,
    seed: int,
    other_pids: bool = True,
    max_energy: float | None = None,
) -> pd.DataFrame:
    """Draw ``k`` target poses for every source image, skipping implausible ones.

    Each source's draw is seeded by ``(seed, source path)`` alone, so it does not depend on which
    other sources are in the run (a resumed or partial run makes the same choices): the candidate
    targets are put in a seeded random order and the first ``k`` *plausible* ones are taken, i.e. a
    target whose prior energy exceeds ``max_energy`` is replaced by the next candidate in that order.
    When the candidates run out before ``k`` plausible targets are found, the remaining rows are
    rejected before generation: ``reason`` :data:`~posegen.filter.scores.IMPLAUSIBLE_TARGET` and
    ``target`` the implausible candidate drawn for them. When a source has fewer candidates than
    ``k`` at all, plausible targets are drawn again (with replacement, seeded).

    Args:
        sources: DataFrame with ``path`` and ``pid`` of the images to re-pose.
        bank: DataFrame with ``path`` and ``pid`` of the usable target poses (see
            :func:`usable_poses`), optionally ``prior_energy`` (float, lower = more plausible, NaN =
            unknown, which counts as plausible); sorted internally by path for determinism.
        k: targets per source.
        seed: run seed.
        other_pids: draw from other identities' images when there are any (otherwise, or as a
            fallback, from any other image). A source's own image is never its target.
        max_energy: a target with ``prior_energy > max_energy`` is implausible; None accepts all.

    Returns:
        DataFrame :data:`TARGET_COLUMNS`: ``source, k, target, seed, prior_energy, reason`` with
        ``k`` rows per source that has at least one candidate (``k`` is 1-based; ``seed`` is the
        per-image generation seed; ``reason`` is ``""`` for a row to generate).
    """
    bank = bank.sort_values("path").reset_index(drop=True)
    bank_paths = bank["path"].to_numpy()
    bank_pids = bank["pid"].to_numpy()
    energy = bank["prior_energy"].to_numpy(dtype=np.float64) if "prior_energy" in bank else np.full(len(bank), np.nan)
    plausible = ~(energy > max_energy) if max_energy is not None else np.ones(len(bank), dtype=bool)
    rows = []
    for src, pid in zip(sources["path"], sources["pid"]):
        cand = bank_paths != src
        if other_pids and (cand & (bank_pids != pid)).any():
            cand &= bank_pids != pid
        idx = np.flatnonzero(cand)
        if len(idx) == 0:
            continue
        rng = np.random.default_rng(stable_seed(seed, src, "targets"))
        order = rng.permutation(idx)
        good = order[plausible[order]]
        picks: list[tuple[int, str]] = [(int(t), "") for t in good[:k]]
        if len(picks) < k:
            if len(idx) < k and len(good):  # too few candidates at all: draw plausible ones again
                extra = rng.choice(good, size=k - len(picks), replace=True)
                picks += [(int(t), "") for t in extra]
            else:
                bad = order[~plausible[order]]
                picks += [(int(t), IMPLAUSIBLE_TARGET) for t in bad[: k - len(picks)]]
        for j, (t, reason) in enumerate(picks, 1):
            noise = stable_seed(seed, src, j, "noise") % (2**31)
            rows.append((src, j, bank_paths[t], noise, float(energy[t]), reason))
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)
