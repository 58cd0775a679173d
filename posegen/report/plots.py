"""Score distributions of an augment run as one PNG (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write
from ..filter.scores import reason_kind

__all__ = ["plot_scores", "SCORE_PANELS"]

#: ``(manifest column, title, FilterConfig threshold field or None, "min"/"max")`` per histogram;
#: ``"min"``: a value below the threshold is rejected, ``"max"``: at or above it is rejected.
SCORE_PANELS = (
    ("oks", "OKS(target, re-estimated)", "min_oks", "min"),
    ("identity_sim", "identity: cosine to source", "min_identity", "min"),
    ("identity_sim_others", "identity: mean cosine to pid's other images", "min_identity_others", "min"),
    ("source_ssim", "SSIM to source (model resolution)", "max_source_ssim", "max"),
    ("prior_energy", "target pose prior energy", None, "max"),
)


def plot_scores(
    manifest: pd.DataFrame,
    recipe,
    path: str | os.PathLike,
    *,
    prior_threshold: float | None = None,
) -> Path:
    """Histograms of the filter's scores, kept vs rejected, with the thresholds drawn.

    Args:
        manifest: an augment manifest (:data:`posegen.augment.MANIFEST_COLUMNS`); only synthetic
            rows with a target (``k > 0``) are plotted; NaN scores are left out (the panel says how
            many values it shows).
        recipe: the :class:`posegen.recipe.Recipe` whose ``filter`` thresholds are drawn.
        path: the PNG to write (atomically).
        prior_threshold: the prior energy threshold used for the targets (None: not drawn).

    Returns:
        ``path``. The last panel shows the rejections by reason (bar chart).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    syn = manifest[manifest["synthetic"].astype(bool) & (manifest["k"] > 0)]
    kept = syn["kept"].astype(bool).to_numpy()
    fig = Figure(figsize=(15, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    for ax, (col, title, field, kind) in zip(axes, SCORE_PANELS):
        vals = syn[col].to_numpy(dtype=np.float64) if col in syn else np.full(len(syn), np.nan)
        ok = np.isfinite(vals)
        thr = prior_threshold if field is None else getattr(recipe.filter, field)
        data = [vals[ok & kept], vals[ok & ~kept]]
        if ok.any():
            lo, hi = float(np.min(vals[ok])), float(np.max(vals[ok]))
            if thr is not None and np.isfinite(thr):
                lo, hi = min(lo, thr), max(hi, thr)
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
            ax.hist(data, bins=bins, stacked=True, color=["#2e7d32", "#c62828"], label=[f"kept ({len(data[0])})", f"rejected ({len(data[1])})"])
        else:
            ax.text(0.5, 0.5, "no values (not computed)", ha="center", va="center", transform=ax.transAxes, color="gray")
        if thr is not None and np.isfinite(thr):
            word = "min" if kind == "min" else "max"
            ax.axvline(thr, color="black", linestyle="--", linewidth=1.5, label=f"{word} {thr:g}")
        ax.set_title(f"{title}  (n={int(ok.sum())})", fontsize=10)
        ax.set_ylabel("images")
        if ok.any() or thr is not None:
            ax.legend(fontsize=8)
    ax = axes[len(SCORE_PANELS)]
    reasons = syn.loc[~kept, "reason"].map(reason_kind).value_counts()
    if len(reasons):
        labels = [r if len(r) <= 48 else r[:45] + "..." for r in reasons.index]
        ax.barh(range(len(reasons)), reasons.to_numpy(), color="#c62828")
        ax.set_yticks(range(len(reasons)), labels, fontsize=8)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no rejections", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_title(f"rejected by reason ({int((~kept).sum())} of {len(syn)})", fontsize=10)
    ax.set_xlabel("images")
    fig.suptitle("posegen filter scores: kept vs rejected", fontsize=12)
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90))
