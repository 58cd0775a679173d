"""Quality filter, version 2: sanity, image artifacts, pose fidelity, near-copies and identity.

A generated image is kept when every check below passes. A rejection has exactly one reason, the
first failing check in this order (the order is part of the contract: reports and tests rely on it):

1. ``"non-finite output"`` — the sampler produced NaN/inf values;
2. ``"blank output"`` — pixel standard deviation (0..1 scale) below ``min_std``;
3. ``"holes in output (hole fraction > t)"`` — the share of near-black flat pixels in the target's
   person box exceeds the source's share by more than ``max_hole_fraction`` (warp holes);
4. ``"torn seams (seam fraction > t)"`` — the share of the target's body whose contrast-normalised
   gradient exceeds the source's 99th percentile, beyond the source's, is above
   ``max_seam_fraction`` (None by default: measured, stored, not decided on);
5. ``"smeared output (sharpness ratio < t)"`` — fine detail per unit of edge energy on the body,
   relative to the source's, below ``min_sharpness_ratio``;
5b. ``"copied body parts (foreign-part fraction > t)"`` — the share of the target's body whose limb
   warp samples another body part of the source (ghost limbs), above ``max_foreign_fraction``
   (None = off; predicted from the two poses);
5c. ``"invented background (invented fraction > t)"`` — the share of the frame the default model's
   warp has no source pixel for (repainted by the model, with broken or smeared legs when large), above
   ``max_invented_fraction`` (None = off; predicted from the source image and the two poses).
   The artifact checks (:mod:`posegen.filter.artifacts`, computed at 256x128) need the source
   image and both poses with >= 2 present joints; otherwise their scores are NaN and they are not
   applied. They come before the pose checks because a torn image often also fails those, and
   "holes" / "smear" is the more useful diagnosis;
6. ``"target pose empty"`` — the target has no joint with score >= ``min_score``;
7. ``"near-copy of source (SSIM >= t)"`` — the output is (nearly) the source image although the
   target pose differs from the source pose: SSIM(output, source) >= ``max_source_ssim``, both
   resized to the comparison frame (the model's resolution in ``augment``), applied only when
   OKS(source pose, target pose) in that frame is < ``copy_pose_oks``. It comes before the pose
   checks because a copied source usually also fails them, and "copy" is the more useful diagnosis;
8. ``"no person found in output"`` — the pose backend finds no person (OKS recorded as 0);
9. ``"low pose fidelity (OKS < t)"`` — OKS(target, pose re-estimated on the output) < ``min_oks``;
   with ``mirror_oks``, the larger of that and the OKS to the target with left and right exchanged
   (``oks_mirrored``): seen from behind or side-on, the pose estimator often reads a person's left
   and right the other way round, on the output or on the image the target pose came from, and the
   skeleton in the image is the target's all the same;
10. ``"low identity (source similarity < t)"`` — cosine of the re-ID embeddings of output and source
   below ``min_identity``;
11. ``"low identity (similarity to other images < t)"`` — mean cosine between the output and the
   identity's *other* real images below ``min_identity_others`` (not applied when there are none).

Before generation, :func:`posegen.augment.choose_targets` rejects target poses the pose prior finds
implausible (reason ``"implausible target pose"``, see :data:`IMPLAUSIBLE_TARGET`).

The identity checks need a re-ID embedder (:class:`posegen.metrics.ReidEmbedder`, a local ONNX
file); without one they are skipped and their scores are NaN. Every score that was computed is
returned, whatever the decision, so reports can show the distributions of kept and rejected images.

OKS convention: COCO's ``exp(-d^2 / (2 s^2 (2 sigma_i)^2))`` with ``s^2`` the area of the tight box
of the target's present joints (pixels^2), see :func:`posegen.metrics.oks`.

Default thresholds (:class:`posegen.recipe.FilterConfig`) were measured on real CUHK03 train images
(60 pids, 578 images, OSNet x0.25 MSMT17, each image downscaled to the model resolution and back):

====================================  =================  =================
cosine percentiles 10 / 50 / 90        64x32 (tiny)       128x64 (cuhk03)
====================================  =================  =================
same pid, another image               0.553 0.669 0.775  0.627 0.745 0.850
different pid                         0.509 0.616 0.709  0.568 0.674 0.764
mean to the pid's other images        0.598 0.667 0.733  0.685 0.743 0.793
mean to another pid's images          0.541 0.621 0.696  0.607 0.682 0.744
====================================  =================  =================

SSIM at 64x32 between a source and another real image of the same person is at most 0.37 (99th
percentile; 0.28 at 128x64), while a copy of the source after the upscale / JPEG / downscale round
trip of ``augment`` scores >= 0.97; OKS between random pairs of Market-1501 poses is >= 0.8 for 0.5%
of pairs.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..metrics import oks, pck, ssim
from .artifacts import artifact_scores
from ..pose.backends import NoPersonFound, PoseBackend
from ..pose.keypoints import COCO17_FLIP_INDEX, empty_keypoints, scale_keypoints
from ..repose.render import resize_image

__all__ = [
    "reason_kind",
    "pose_only_reason",
    "oks",
    "FilterScores",
    "score_output",
    "filter_batch",
    "FILTER_COLUMNS",
    "REASON_ORDER",
    "IMPLAUSIBLE_TARGET",
    "UNHONOURED_TARGET",
    "PCK_ALPHA",
    "PCK_REFERENCE",
]

#: Reason of a row whose target pose the pose-validity prior rejected before generation.
IMPLAUSIBLE_TARGET = "implausible target pose"
#: Reason of a row rejected before generation because the default model's warp cannot honour its
#: target pose: fewer than K of the source's candidates (the first ``max_pose_checks`` of its draw)
#: lie in the OKS band ``augment.target_pose_oks`` and pass the filter's pose-only checks predicted
#: from the two poses (copied body parts, invented background, a hand laid over the torso); the
#: rows beyond those are not generated (:func:`posegen.augment.targets.choose_targets`, ``honour``).
UNHONOURED_TARGET = "target pose the warp cannot honour"

#: Reason prefixes in the order the checks run (the first failing one is the reason).
REASON_ORDER = (
    "non-finite output",
    "blank output",
    "holes in output",
    "torn seams",
    "smeared output",
    "copied body parts",
    "invented background",
    "target pose empty",
    "near-copy of source",
    "no person found in output",
    "low pose fidelity",
    "low identity (source similarity",
    "low identity (similarity to other images",
)

#: Columns of :func:`filter_batch`'s result (all scores, then the decision).
FILTER_COLUMNS = [
    "oks", "oks_mirrored", "pck", "std", "n_keypoints", "identity_sim", "identity_sim_others", "source_ssim",
    "source_pose_oks", "hole_fraction", "seam_fraction", "sharpness_ratio", "foreign_fraction", "invented_fraction",
    "prior_energy", "kept", "reason",
]  # fmt: skip

#: PCK stored with every output: PCKh@0.5 (head-box reference, as PATN / PIDM report it).
PCK_ALPHA, PCK_REFERENCE = 0.5, "head"

_NAN = float("nan")


@dataclass(frozen=True)
class FilterScores:
    """Scores and decision for one generated image (NaN = not computed / not applicable).

    Attributes:
        oks: OKS(target, re-estimated) in ``[0, 1]``; 0 when no person is found.
        oks_mirrored: OKS to the target with left and right exchanged
            (:data:`~posegen.pose.keypoints.COCO17_FLIP_INDEX`); 0 when no person is found.
        std: pixel standard deviation on a 0..1 scale.
        n_keypoints: joints re-estimated with score >= min_score (0 if no person).
        keypoints: re-estimated ``float32 [17, 3]`` in pixels of the scored image.
        kept: the decision.
        reason: ``""`` when kept, else the first failed check (see the module docstring).
        pck: PCKh@0.5 of the re-estimated pose against the target.
        identity_sim: cosine(output embedding, source embedding) in ``[-1, 1]``.
        identity_sim_others: mean cosine to the identity's other real images.
        source_ssim: SSIM(output, source) in the comparison frame.
        source_pose_oks: OKS(source pose, target pose) in the comparison frame.
        hole_fraction, seam_fraction, sharpness_ratio, foreign_fraction, invented_fraction: image-artifact scores
            against the source (:mod:`posegen.filter.artifacts`).
        prior_energy: the target pose's prior energy (stored only; decided before generation).
    """

    oks: float
    std: float
    n_keypoints: int
    keypoints: np.ndarray
    kept: bool
    reason: str
    pck: float = _NAN
    identity_sim: float = _NAN
    identity_sim_others: float = _NAN
    source_ssim: float = _NAN
    source_pose_oks: float = _NAN
    hole_fraction: float = _NAN
    seam_fraction: float = _NAN
    sharpness_ratio: float = _NAN
    foreign_fraction: float = _NAN
    invented_fraction: float = _NAN
    prior_energy: float = _NAN
    oks_mirrored: float = _NAN


def _as_float01(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return np.clip(np.round(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _artifact_reason(s: dict, cfg) -> str:
    """The first failing image-artifact check (checks 3-5 of the module docstring), or ``""``."""
    t = getattr(cfg, "max_hole_fraction", None)
    if t is not None and np.isfinite(s["hole_fraction"]) and s["hole_fraction"] > t:
        return f"holes in output (hole fraction > {t:g})"
    t = getattr(cfg, "max_seam_fraction", None)
    if t is not None and np.isfinite(s["seam_fraction"]) and s["seam_fraction"] > t:
        return f"torn seams (seam fraction > {t:g})"
    t = getattr(cfg, "min_sharpness_ratio", None)
    if t is not None and np.isfinite(s["sharpness_ratio"]) and s["sharpness_ratio"] < t:
        return f"smeared output (sharpness ratio < {t:g})"
    return pose_only_reason(s, cfg)


def pose_only_reason(s, cfg) -> str:
    """The first failing pose-only check (5b, 5c of the module docstring: copied body parts,
    invented background), or ``""``.

    Both scores are computed from the source and the two poses, not from the output, so a pair that
    fails them is rejected whatever the model draws: ``augment``'s target choice predicts them for
    candidate targets, and ``benchmarks/repose_quality.py`` reports the share of pairs that pass
    them (the kept-rate's ceiling on a fixed pair list).

    Args:
        s: a row of :func:`filter_batch`'s result, or a dict, with ``foreign_fraction`` and
            ``invented_fraction`` (shares in ``[0, 1]``; NaN = not computed, which passes).
        cfg: a :class:`posegen.recipe.FilterConfig` (a threshold that is None turns its check off).
    """
    t = getattr(cfg, "max_foreign_fraction", None)
    if t is not None and np.isfinite(s["foreign_fraction"]) and s["foreign_fraction"] > t:
        return f"copied body parts (foreign-part fraction > {t:g})"
    t = getattr(cfg, "max_invented_fraction", None)
    if t is not None and np.isfinite(s["invented_fraction"]) and s["invented_fraction"] > t:
        return f"invented background (invented fraction > {t:g})"
    return ""


def _reason(s: dict, cfg, min_score: float, target: np.ndarray) -> str:
    """The first failing check (module docstring order) for finite, non-blank outputs."""
    art = _artifact_reason(s, cfg)
    if art:
        return art
    if not (np.asarray(target)[:, 2] >= min_score).any():
        return "target pose empty"
    if (
        np.isfinite(s["source_ssim"])
        and not s["source_pose_oks"] >= cfg.copy_pose_oks
        and s["source_ssim"] >= cfg.max_source_ssim
    ):
        return f"near-copy of source (SSIM >= {cfg.max_source_ssim:g})"
    if not s["person"]:
        return "no person found in output"
    fidelity = s["oks"]
    if getattr(cfg, "mirror_oks", False) and np.isfinite(s["oks_mirrored"]):
        fidelity = max(fidelity, s["oks_mirrored"])
    if not fidelity >= cfg.min_oks:
        return f"low pose fidelity (OKS < {cfg.min_oks:g})"
    if np.isfinite(s["identity_sim"]) and s["identity_sim"] < cfg.min_identity:
        return f"low identity (source similarity < {cfg.min_identity:g})"
    if np.isfinite(s["identity_sim_others"]) and s["identity_sim_others"] < cfg.min_identity_others:
        return f"low identity (similarity to other images < {cfg.min_identity_others:g})"
    return ""


def filter_batch(
    outputs: Sequence[np.ndarray] | np.ndarray,
    sources: Sequence[np.ndarray] | np.ndarray | None,
    source_keypoints,
    target_keypoints,
    config,
    backend: PoseBackend,
    *,
    embedder=None,
    source_embeddings: np.ndarray | None = None,
    others_embeddings: Sequence[np.ndarray | None] | None = None,
    min_score: float = 0.5,
    frame_hw: tuple[int, int] | None = None,
    prior_energy: Sequence[float] | None = None,
    return_keypoints: bool = False,
) -> pd.DataFrame:
    """Score a batch of generated images and decide, for each, keep or the first failing check.

    Args:
        outputs: ``N`` generated images, each ``uint8 [H_i, W_i, 3]`` RGB or ``float [H_i, W_i, 3]``
            in ``[0, 1]`` (non-finite values are detected), or one ``[N, H, W, 3]`` array.
        sources: ``N`` source images ``uint8 [h_i, w_i, 3]`` (any size: resized to the comparison
            frame with a plain bicubic resize), or None to skip the near-copy and image-artifact
            checks.
        source_keypoints: ``float [N, 17, 3]`` COCO-17 source poses, pixels of ``sources[i]``
            (ignored when ``sources`` is None).
        target_keypoints: ``float [N, 17, 3]`` target poses, pixels of ``outputs[i]``.
        config: a :class:`posegen.recipe.FilterConfig` (thresholds ``min_oks``, ``min_std``,
            ``max_hole_fraction``, ``max_seam_fraction``, ``min_sharpness_ratio``,
            ``min_identity``, ``min_identity_others``, ``max_source_ssim``, ``copy_pose_oks``).
        backend: pose backend that re-estimates each output's pose.
        embedder: a :class:`posegen.metrics.ReidEmbedder`, or None to skip the identity checks.
        source_embeddings: ``float32 [N, D]`` L2-normalised source embeddings; None embeds
            ``sources`` with ``embedder``.
        others_embeddings: per output, ``float32 [M_i, D]`` embeddings of the identity's other real
            images (``M_i = 0`` or None: the check is NaN and not applied).
        min_score: joint presence threshold (OKS, PCK, keypoint counts).
        frame_hw: ``(height, width)`` in which the near-copy check compares output and source
            (SSIM) and source and target poses (OKS); None uses each output's own size.
            ``augment`` passes the model's resolution, where the image was generated.
        prior_energy: per output, the target's prior energy (stored, not decided on here).
        return_keypoints: add a ``keypoints`` column (re-estimated ``float32 [17, 3]`` in pixels
            of each output; zeros when no person was found).

    Returns:
        DataFrame with :data:`FILTER_COLUMNS` (one row per output, in order). ``oks`` is 0 when no
        person was found; scores that were not computed are NaN (``n_keypoints`` -1 for a
        non-finite output).

    Raises:
        ValueError: inconsistent batch sizes or keypoints that are not ``[N, 17, 3]``.
    """
    outs = list(outputs)
    n = len(outs)
    tgt = np.asarray(target_keypoints, dtype=np.float32).reshape(-1, 17, 3) if n else np.zeros((0, 17, 3), np.float32)
    if len(tgt) != n:
        raise ValueError(f"got {n} outputs and {len(tgt)} target poses")
    srcs = None if sources is None else list(sources)
    if srcs is not None:
        src_kp = np.asarray(source_keypoints, dtype=np.float32).reshape(-1, 17, 3)
        if len(srcs) != n or len(src_kp) != n:
            raise ValueError(f"got {n} outputs, {len(srcs)} sources and {len(src_kp)} source poses")
    energies = np.full(n, np.nan) if prior_energy is None else np.asarray(prior_energy, dtype=np.float64)
    if others_embeddings is not None and len(others_embeddings) != n:
        raise ValueError(f"got {n} outputs and {len(others_embeddings)} sets of other-image embeddings")

    rows: list[dict] = []
    finite = []
    for i, img in enumerate(outs):
        f = _as_float01(img)
        row = dict(
            oks=_NAN, oks_mirrored=_NAN, pck=_NAN, std=_NAN, n_keypoints=-1, identity_sim=_NAN, identity_sim_others=_NAN,
            source_ssim=_NAN, source_pose_oks=_NAN, hole_fraction=_NAN, seam_fraction=_NAN, sharpness_ratio=_NAN, foreign_fraction=_NAN, invented_fraction=_NAN, prior_energy=float(energies[i]), kept=False, reason="",
            keypoints=empty_keypoints(),
        )  # fmt: skip
        rows.append(row)
        if f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"output {i} must be [H, W, 3] RGB, got {f.shape}")
        if not np.isfinite(f).all():
            row["reason"] = "non-finite output"
            continue
        row["std"] = float(f.std())
        finite.append(i)

    u8 = {i: _as_uint8(outs[i]) for i in finite}
    # pose fidelity
    for i in finite:
        row = rows[i]
        try:
            kp = backend.estimate(u8[i])
            row["person"] = True
        except NoPersonFound:
            kp, row["person"] = empty_keypoints(), False
        row["keypoints"] = kp
        row["n_keypoints"] = int((kp[:, 2] >= min_score).sum())
        if (tgt[i][:, 2] >= min_score).any():
            row["oks"] = oks(kp, tgt[i], min_score=min_score) if row["person"] else 0.0
            mirrored = np.asarray(tgt[i])[list(COCO17_FLIP_INDEX)]
            row["oks_mirrored"] = oks(kp, mirrored, min_score=min_score) if row["person"] else 0.0
            row["pck"] = pck(kp, tgt[i], alpha=PCK_ALPHA, reference=PCK_REFERENCE, min_score=min_score) if row["person"] else 0.0
    # near-copy: SSIM to the source, OKS between source and target pose, in the comparison frame
    if srcs is not None:
        for i in finite:
            h, w = frame_hw if frame_hw is not None else u8[i].shape[:2]
            out_f = resize_image(u8[i], (h, w))
            src_f = resize_image(np.asarray(srcs[i], dtype=np.uint8), (h, w))
            if min(h, w) >= 11:
                rows[i]["source_ssim"] = float(ssim(out_f, src_f)[0])
            sh, sw = np.asarray(srcs[i]).shape[:2]
            oh, ow = u8[i].shape[:2]
            s_kp = scale_keypoints(src_kp[i], (sw, sh), (w, h))
            t_kp = scale_keypoints(tgt[i], (ow, oh), (w, h))
            rows[i]["source_pose_oks"] = oks(s_kp, t_kp, min_score=min_score)
            # image artifacts (holes, seams, smears) against the source, in the 256x128 working frame
            rows[i].update(artifact_scores(u8[i], np.asarray(srcs[i], dtype=np.uint8), tgt[i], src_kp[i], min_score=min_score))
    # identity
    if embedder is not None and finite:
        out_emb = embedder.embed([u8[i] for i in finite])
        if source_embeddings is None and srcs is not None:
            source_embeddings = embedder.embed([srcs[i] for i in finite])
            src_emb = dict(zip(finite, source_embeddings))
        elif source_embeddings is not None:
            src_emb = {i: np.asarray(source_embeddings)[i] for i in finite}
        else:
            src_emb = {}
        for e, i in zip(out_emb, finite):
            if i in src_emb:
                rows[i]["identity_sim"] = float(np.dot(e, src_emb[i]))
            others = None if others_embeddings is None else others_embeddings[i]
            if others is not None and len(others):
                rows[i]["identity_sim_others"] = float((np.asarray(others, dtype=np.float32) @ e).mean())
    # decisions
    for i in finite:
        row = rows[i]
        if row["std"] < config.min_std:
            row["reason"] = "blank output"
        else:
            row["reason"] = _reason(row, config, min_score, tgt[i])
        row["kept"] = row["reason"] == ""
    cols = FILTER_COLUMNS + (["keypoints"] if return_keypoints else [])
    return pd.DataFrame([{c: r[c] for c in cols} for r in rows], columns=cols)


def score_output(
    image: np.ndarray,
    target_keypoints: np.ndarray,
    backend: PoseBackend,
    *,
    min_oks: float,
    min_std: float,
    min_score: float = 0.5,
    config=None,
    source: np.ndarray | None = None,
    source_keypoints: np.ndarray | None = None,
    embedder=None,
    source_embedding: np.ndarray | None = None,
    others_embeddings: np.ndarray | None = None,
    frame_hw: tuple[int, int] | None = None,
) -> FilterScores:
    """Score one generated image and decide whether to keep it (:func:`filter_batch` for one image).

    Args:
        image: the output, ``float [H, W, 3]`` in ``[0, 1]`` (non-finite values are detected) or
            ``uint8 [H, W, 3]`` RGB.
        target_keypoints: ``float32 [17, 3]`` target pose in pixels of ``image``.
        backend: pose backend used to re-estimate the pose of the output.
        min_oks: OKS needed to keep the image (overrides ``config.min_oks``).
        min_std: minimum pixel standard deviation (0..1 scale); below it the output is blank
            (overrides ``config.min_std``).
        min_score: keypoint presence threshold (for OKS and the keypoint count).
        config: a :class:`posegen.recipe.FilterConfig` for the other thresholds (default: its
            defaults).
        source, source_keypoints: the source image ``uint8 [h, w, 3]`` and its pose (pixels of
            ``source``) for the near-copy and image-artifact checks; None skips them.
        embedder, source_embedding, others_embeddings: identity checks, as in :func:`filter_batch`
            (``source_embedding`` ``float32 [D]``, ``others_embeddings`` ``float32 [M, D]``).
        frame_hw: comparison frame of the near-copy check, as in :func:`filter_batch`.

    Returns:
        :class:`FilterScores`.
    """
    from ..recipe import FilterConfig

    cfg = (config or FilterConfig()).model_copy(update={"min_oks": min_oks, "min_std": min_std})
    df = filter_batch(
        [image], None if source is None else [source],
        None if source_keypoints is None else np.asarray(source_keypoints)[None],
        np.asarray(target_keypoints)[None], cfg, backend, embedder=embedder,
        source_embeddings=None if source_embedding is None else np.asarray(source_embedding)[None],
        others_embeddings=None if others_embeddings is None else [others_embeddings],
        min_score=min_score, frame_hw=frame_hw, return_keypoints=True,
    )  # fmt: skip
    r = df.iloc[0]
    return FilterScores(
        oks=float(r["oks"]), std=float(r["std"]), n_keypoints=max(int(r["n_keypoints"]), 0),
        keypoints=r["keypoints"], kept=bool(r["kept"]), reason=str(r["reason"]), pck=float(r["pck"]),
        identity_sim=float(r["identity_sim"]), identity_sim_others=float(r["identity_sim_others"]),
        source_ssim=float(r["source_ssim"]), source_pose_oks=float(r["source_pose_oks"]),
        hole_fraction=float(r["hole_fraction"]), seam_fraction=float(r["seam_fraction"]),
        sharpness_ratio=float(r["sharpness_ratio"]), foreign_fraction=float(r["foreign_fraction"]),
        invented_fraction=float(r["invented_fraction"]), prior_energy=float(r["prior_energy"]),
        oks_mirrored=float(r["oks_mirrored"]),
    )  # fmt: skip


_SOURCE_KEYPOINTS = re.compile(r"^source pose has \d+ keypoints \(< (\d+)\)$")


def reason_kind(reason: str) -> str:
    """The kind of a rejection reason, without its per-image values, for tables of counts.

    ``"implausible source pose: collapsed: joints span 0.42 of the image height (< 0.5)"`` ->
    ``"implausible source pose: collapsed"``; ``"source pose has 7 keypoints (< 10)"`` ->
    ``"source pose has < 10 keypoints"``; the filter's reasons (``"low pose fidelity (OKS < 0.5)"``)
    carry only thresholds and stay as they are. The manifest keeps the full reason.
    """
    r = str(reason)
    prefix = "implausible source pose: "
    if r.startswith(prefix):
        return prefix + r[len(prefix):].split(":", 1)[0]
    m = _SOURCE_KEYPOINTS.match(r)
    return f"source pose has < {m.group(1)} keypoints" if m else r
