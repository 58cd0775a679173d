"""Choosing target poses for each source image from the dataset's own pose bank."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from .._io import stable_seed
from .._parallel import thread_map
from ..filter.scores import IMPLAUSIBLE_TARGET, UNHONOURED_TARGET
from ..pose.keypoints import DEFAULT_SIDE_RATIO, pose_view

__all__ = ["choose_targets", "pose_view", "TARGET_COLUMNS", "DEFAULT_SIDE_RATIO", "DEFAULT_VIEW_TOLERANCE"]

#: Columns of :func:`choose_targets`' result.
TARGET_COLUMNS = ["source", "k", "target", "seed", "prior_energy", "reason"]

#: :func:`choose_targets`: largest torso-aspect difference (shoulder width / torso length) of a
#: view-matched target.
DEFAULT_VIEW_TOLERANCE = 0.15


def _views(frame: pd.DataFrame, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(facing int8, known bool, aspect float) of a frame's rows from ``facing``/``aspect`` columns
    or its ``keypoints`` column; None when it has neither."""
    if "facing" in frame.columns and "aspect" in frame.columns:
        facing = frame["facing"].to_numpy(dtype=np.float64)
        known = np.isfinite(facing)
        return np.nan_to_num(facing).astype(np.int8), known, frame["aspect"].to_numpy(dtype=np.float64)
    if "keypoints" in frame.columns:
        if len(frame) == 0:
            return np.zeros(0, np.int8), np.zeros(0, bool), np.zeros(0)
        v = pose_view(np.stack(frame["keypoints"].to_list()), min_score)
        return v["facing"], np.isfinite(v["dx"]), v["aspect"].astype(np.float64)
    return None


def choose_targets(
    sources: pd.DataFrame,
    bank: pd.DataFrame,
    *,
    k: int,
    seed: int,
    other_pids: bool = True,
    max_energy: float | None = None,
    match_view: bool = False,
    view_tolerance: float = DEFAULT_VIEW_TOLERANCE,
    min_score: float = 0.5,
    pose_oks_range: tuple[float, float] | None = None,
    max_pose_checks: int = 200,
    honour: Callable[[str, np.ndarray, np.ndarray], np.ndarray] | None = None,
    prefer: Callable[[str, np.ndarray, np.ndarray], np.ndarray] | None = None,
    workers: int = 1,
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

    With ``match_view``, the same seeded order is split (stably) in two: the candidates that match
    the source's view come first — same facing (:func:`~posegen.pose.keypoints.pose_view`: front, back or side) and a torso
    aspect within ``view_tolerance`` of the source's (not checked when either aspect is unknown) —
    then the others; so the others are used only when fewer than ``k`` plausible candidates match.
    A source whose view is unknown (no shoulder or hip pair) keeps the plain order. The choice
    still depends only on ``(seed, source path)`` and the bank.

    Args:
        sources: DataFrame with ``path`` and ``pid`` of the images to re-pose.
        bank: DataFrame with ``path`` and ``pid`` of the usable target poses (see
            :func:`usable_poses`), optionally ``prior_energy`` (float, lower = more plausible, NaN =
            unknown, which counts as plausible), optionally ``plausible`` (bool, e.g. from
            :func:`posegen.pose.plausibility.pose_plausibility`; False excludes the target as a too
            high energy does, missing/NaN counts as plausible); for ``match_view`` either
            ``keypoints`` (``float32 [17, 3]`` cells, COCO-17, pixels) or precomputed ``facing``
            (-1/0/+1, NaN = unknown) and ``aspect`` columns; sorted internally by path for
            determinism.
        k: targets per source.
        seed: run seed.
        other_pids: draw from other identities' images when there are any (otherwise, or as a
            fallback, from any other image). A source's own image is never its target.
        max_energy: a target with ``prior_energy > max_energy`` is implausible; None accepts all.
        match_view: put the candidates with the source's view first (see above). The source's view
            comes from its own ``keypoints`` or ``facing``/``aspect`` columns in ``sources`` when
            present, else from its row in ``bank`` (unknown when it is in neither).
        view_tolerance: largest ``|aspect(target) - aspect(source)|`` of a matching target.
        min_score: joint confidence for :func:`~posegen.pose.keypoints.pose_view` (``match_view`` only) and the OKS below.
        pose_oks_range: ``(lo, hi)``: targets the warp can honour come first (after the view
            order): those whose pose, placed on the source person
            (:func:`posegen.repose.warp.align_pose`), has ``lo <= OKS(target, source pose) < hi``
            (another frame of the same walk, not the same pose). Needs ``keypoints`` in ``sources``
            and ``bank`` (COCO-17, pixels of each image). Only the first ``max_pose_checks``
            candidates of a source's order are tested; the rest follow them unchanged.
        honour: with ``pose_oks_range``, one more test of the candidates in the OKS band, called
            on a few at a time as ``honour(source path, source keypoints float32 [17, 3], placed
            target keypoints float32 [N, 17, 3])`` (pixels of the source image) -> ``bool [N]``:
            False puts the candidate after the ones that pass (``augment`` passes the filter's
            pose-only checks predicted for the default model's warp: invented share and
            foreign-part share). Only the candidates in the band that pass are generated: when
            fewer than ``k`` do, the other rows are rejected before generation (``reason``
            :data:`~posegen.filter.scores.UNHONOURED_TARGET`): the filter would reject most of
            their outputs (a target outside the band, or one the warp cannot honour). None: no
            such test.
        prefer: with ``pose_oks_range``, a preference among the candidates that are in the band and
            pass ``honour``, called like ``honour`` -> ``int [N]`` ranks (0 = preferred; a bool
            array counts True as 1): the ``k`` generated are the first of rank 0, then, when fewer
            than ``k`` are, the others by rank and then in order (``augment`` passes the number of
            limb-motion limits a target exceeds, :func:`posegen.pose.keypoints.joint_motion`). The
            search goes on past the first ``k`` that pass until ``k`` of rank 0 are found or the
            ``max_pose_checks`` candidates are tested. None: no preference.
        workers: sources whose targets are chosen at once (threads, :func:`posegen._parallel.thread_map`;
            ``honour`` must then be thread-safe). The choice does not depend on it.

    Returns:
        DataFrame :data:`TARGET_COLUMNS`: ``source, k, target, seed, prior_energy, reason`` with
        ``k`` rows per source that has at least one candidate (``k`` is 1-based; ``seed`` is the
        per-image generation seed; ``reason`` is ``""`` for a row to generate).

    Raises:
        ValueError: ``match_view`` and ``bank`` has neither ``keypoints`` nor ``facing`` and
            ``aspect`` columns.
    """
    bank = bank.sort_values("path").reset_index(drop=True)
    bank_paths = bank["path"].to_numpy()
    bank_pids = bank["pid"].to_numpy()
    energy = bank["prior_energy"].to_numpy(dtype=np.float64) if "prior_energy" in bank else np.full(len(bank), np.nan)
    plausible = ~(energy > max_energy) if max_energy is not None else np.ones(len(bank), dtype=bool)
    if "plausible" in bank.columns:
        plausible &= bank["plausible"].astype(object).where(bank["plausible"].notna(), True).astype(bool).to_numpy()
    if match_view:
        bank_view = _views(bank, min_score)
        if bank_view is None:
            raise ValueError("match_view needs a 'keypoints' column (or 'facing' and 'aspect' columns) in the bank")
        b_facing, b_known, b_aspect = bank_view
        src_view = _views(sources, min_score)
        if src_view is None:  # look the sources up in the bank
            row_of = {p: i for i, p in enumerate(bank_paths)}
            at = np.array([row_of.get(p, -1) for p in sources["path"]], dtype=np.int64)
            inb = at >= 0
            src_view = (
                np.where(inb, b_facing[at], 0).astype(np.int8),
                np.where(inb, b_known[at], False),
                np.where(inb, b_aspect[at], np.nan),
            )
        s_facing, s_known, s_aspect = src_view
    if pose_oks_range is not None:
        if "keypoints" not in bank.columns or "keypoints" not in sources.columns:
            raise ValueError("pose_oks_range needs a 'keypoints' column in sources and bank")
        bank_kp = bank["keypoints"].to_list()
    src_paths, src_pids = sources["path"].to_list(), sources["pid"].to_list()
    src_kps = sources["keypoints"].to_list() if pose_oks_range is not None else None

    def pick(i_src: int) -> list[tuple]:
        src, pid = src_paths[i_src], src_pids[i_src]
        rows: list[tuple] = []
        cand = bank_paths != src
        if other_pids and (cand & (bank_pids != pid)).any():
            cand &= bank_pids != pid
        idx = np.flatnonzero(cand)
        if len(idx) == 0:
            return rows
        rng = np.random.default_rng(stable_seed(seed, src, "targets"))
        order = rng.permutation(idx)
        if match_view and s_known[i_src]:
            same = b_known[order] & (b_facing[order] == s_facing[i_src])
            gap = np.abs(b_aspect[order] - s_aspect[i_src])
            same &= ~(gap > view_tolerance)  # NaN (unknown aspect) does not count against
            order = np.concatenate([order[same], order[~same]])
        honoured: set[int] | None = None  # with honour: the only candidates to generate
        if pose_oks_range is not None:
            check = None if honour is None else (lambda s_kp, t_kp, src=src: honour(src, s_kp, t_kp))
            like = None if prefer is None else (lambda s_kp, t_kp, src=src: prefer(src, s_kp, t_kp))
            order, passed = _by_pose_distance(order, src_kps[i_src], bank_kp, pose_oks_range,
                                              plausible, k, max_pose_checks, min_score, check, like)  # fmt: skip
            honoured = passed if honour is not None else None

        def why(t) -> str:
            return "" if honoured is None or int(t) in honoured else UNHONOURED_TARGET

        good = order[plausible[order]]
        picks: list[tuple[int, str]] = [(int(t), why(t)) for t in good[:k]]
        if len(picks) < k:
            if len(idx) < k and len(good):  # too few candidates at all: draw plausible ones again
                extra = rng.choice(good, size=k - len(picks), replace=True)
                picks += [(int(t), why(t)) for t in extra]
            else:
                bad = order[~plausible[order]]
                picks += [(int(t), IMPLAUSIBLE_TARGET) for t in bad[: k - len(picks)]]
        for j, (t, reason) in enumerate(picks, 1):
            noise = stable_seed(seed, src, j, "noise") % (2**31)
            rows.append((src, j, bank_paths[t], noise, float(energy[t]), reason))
        return rows

    picked = dict(thread_map(pick, range(len(src_paths)), workers))  # each source's draw is its own
    rows = [row for i in range(len(src_paths)) for row in picked[i]]
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)


def _by_pose_distance(order, source_kp, bank_kp, oks_range, plausible, k, max_checks, min_score, check=None,
                      prefer=None, chunk: int = 16) -> tuple[np.ndarray, set[int]]:  # fmt: skip
    """``order`` with the candidates whose aligned pose is within ``oks_range`` of the source's
    (and passes ``check(source_kp, aligned_kp [N, 17, 3]) -> bool [N]`` when given) first (stable;
    only the first ``max_checks`` plausible candidates are tested, ``chunk`` at a time, until
    ``k`` pass: the ones after the ``k``-th are left in their place, as a one-by-one test would),
    and the set of the candidates (bank rows) moved first (at most ``k``). With ``prefer`` (same
    call as ``check``, cheap, -> ``int [N]`` ranks, 0 = preferred), the rank-0 ones come first among
    those that pass, and the test goes on until ``k`` of them pass (or the candidates run out); only
    then are the others tested, by rank and then in order, to fill up to ``k``."""
    from ..metrics import oks
    from ..repose.warp import align_pose

    lo, hi = oks_range
    src = np.asarray(source_kp, dtype=np.float32).reshape(17, 3)
    head = order[:max_checks]
    liked: list[int] = []  # head positions: in the band, preferred, passing check (at most k)
    spare: list[tuple[int, int, np.ndarray]] = []  # (rank, position, pose): in the band, not preferred, tested only when needed
    for start in range(0, len(head), chunk):
        todo = [j for j in range(start, min(start + chunk, len(head))) if plausible[head[j]]]
        if not todo:
            continue
        raw = np.stack([np.asarray(bank_kp[head[j]], dtype=np.float32).reshape(17, 3) for j in todo])
        placed = align_pose(raw, np.repeat(src[None], len(raw), 0), min_score=min_score)  # the chunk at once
        band = [(j, tgt) for j, tgt in zip(todo, placed) if lo <= oks(tgt, src, min_score=min_score) < hi]
        if not band:
            continue
        rank = np.zeros(len(band), dtype=np.int64) if prefer is None else np.asarray(prefer(src, np.stack([t for _, t in band])), dtype=np.int64)
        spare += [(r, j, t) for (j, t), r in zip(band, rank) if r > 0]
        band = [c for c, r in zip(band, rank) if r <= 0]
        if band:
            passed = np.ones(len(band), dtype=bool) if check is None else np.asarray(check(src, np.stack([t for _, t in band])), dtype=bool)
            liked += [j for (j, _), p in zip(band, passed) if p][: k - len(liked)]
        if len(liked) >= k:
            break
    # too few preferred ones: the others that pass check fill up to k, by rank, then in order
    spare.sort(key=lambda c: (c[0], c[1]))
    others: list[int] = []
    for start in range(0, len(spare) if len(liked) < k else 0, chunk):
        part = spare[start : start + chunk]
        passed = np.ones(len(part), dtype=bool) if check is None else np.asarray(check(src, np.stack([t for _, _, t in part])), dtype=bool)
        others += [j for (_, j, _), p in zip(part, passed) if p][: k - len(liked) - len(others)]
        if len(liked) + len(others) >= k:
            break
    first = np.asarray(liked + others, dtype=np.int64)
    moved = np.zeros(len(head), dtype=bool)
    moved[first] = True
    return np.concatenate([head[first], head[~moved], order[max_checks:]]), {int(t) for t in head[first]}
