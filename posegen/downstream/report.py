"""Aggregating downstream runs and writing the report (JSON, CSV, Markdown, CMC plot).

Every file is written atomically (:mod:`posegen._io`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write, atomic_write_json, atomic_write_text
from .data import ARMS

__all__ = ["METRICS", "summarize_runs", "markdown_table", "verdicts", "write_report"]

#: Metrics reported per run (fractions in [0, 1]).
METRICS: tuple[str, ...] = ("mAP", "rank1", "rank5", "rank10")


def _std(x: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); 0.0 for a single value."""
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def summarize_runs(runs: list[dict]) -> list[dict]:
    """Mean ± std per (fraction, arm) over seeds, and the paired deltas against the real-only arm.

    Args:
        runs: one dict per (fraction, seed, arm) with keys ``fraction``, ``seed``, ``arm``,
            ``n_images``, ``n_extra`` and :data:`METRICS` (and ``cmc``: ranks 1..50).

    Returns:
        One dict per (fraction, arm), ordered by fraction then :data:`~posegen.downstream.data.ARMS`:
        ``fraction``, ``arm``, ``n_seeds``, ``n_images`` (mean over seeds), ``n_extra``,
        ``<metric>_mean``, ``<metric>_std`` and, for arms other than ``real`` when the real arm ran
        with the same seeds, ``delta_<metric>_mean`` / ``delta_<metric>_std`` (per-seed differences
        arm − real, then mean ± std: a paired comparison), for ``posegen`` also
        ``vs_duplicate_<m>_mean/std`` and ``vs_flip_<m>_mean/std`` (posegen − control, paired; m =
        mAP, rank1), plus ``cmc_mean`` (list of 50 floats).
        Standard deviations are sample std (ddof=1), 0 with one seed.
    """
    df = pd.DataFrame(runs)
    out = []
    for fraction in sorted(df["fraction"].unique()):
        at = df[df["fraction"] == fraction]
        real = at[at["arm"] == "real"].set_index("seed")
        for arm in [a for a in ARMS if a in set(at["arm"])]:
            g = at[at["arm"] == arm].sort_values("seed")
            row = {
                "fraction": float(fraction),
                "arm": arm,
                "n_seeds": int(len(g)),
                "seeds": [int(s) for s in g["seed"]],
                "n_images": float(g["n_images"].mean()),
                "n_extra": float(g["n_extra"].mean()),
            }
            for m in METRICS:
                row[f"{m}_mean"] = float(g[m].mean())
                row[f"{m}_std"] = _std(g[m].to_numpy())
            if arm != "real" and len(real) and set(g["seed"]) <= set(real.index):
                for m in METRICS:
                    d = g[m].to_numpy() - real.loc[g["seed"], m].to_numpy()
                    row[f"delta_{m}_mean"] = float(d.mean())
                    row[f"delta_{m}_std"] = _std(d)
            if arm == "posegen":
                for control in ("duplicate", "flip"):
                    c = at[at["arm"] == control].set_index("seed")
                    if len(c) and set(g["seed"]) <= set(c.index):
                        for m in ("mAP", "rank1"):
                            d = g[m].to_numpy() - c.loc[g["seed"], m].to_numpy()
                            row[f"vs_{control}_{m}_mean"] = float(d.mean())
                            row[f"vs_{control}_{m}_std"] = _std(d)
            row["cmc_mean"] = np.mean(np.stack([np.asarray(c) for c in g["cmc"]]), axis=0).astype(float).tolist()
            out.append(row)
    return out


def verdicts(summary: list[dict]) -> list[str]:
    """One plain sentence per fraction: does posegen beat duplicate and flip by more than the seed std?

    "More than the seed std" means the paired mAP difference (posegen − control, mean over seeds)
    exceeds the larger of the two arms' mAP standard deviations over seeds.
    """
    lines = []
    by = {(r["fraction"], r["arm"]): r for r in summary}
    for fraction in sorted({r["fraction"] for r in summary}):
        pg = by.get((fraction, "posegen"))
        if pg is None:
            continue
        parts = []
        for control in ("duplicate", "flip"):
            c = by.get((fraction, control))
            key = f"vs_{control}_mAP_mean"
            if c is None or key not in pg:
                continue
            d = pg[key]
            noise = max(pg["mAP_std"], c["mAP_std"])
            ok = d > noise
            parts.append(
                f"{'beats' if ok else 'does NOT beat'} {control} by more than the seed std "
                f"(mAP {100 * d:+.1f} points paired, seed std {100 * noise:.1f})"
            )
        if parts:
            lines.append(f"At real fraction {fraction:.2f}, real + posegen " + "; it ".join(parts) + ".")
    return lines


def _pm(mean: float, std: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{100 * mean:{sign}.1f} ± {100 * std:.1f}"


def markdown_table(summary: list[dict]) -> str:
    """The summary as a Markdown table (percentages, mean ± std over seeds; Δ = arm − real, paired)."""
    head = "| real fraction | arm | train images | seeds | mAP | Rank-1 | Rank-5 | Rank-10 | Δ mAP | Δ Rank-1 |"
    lines = [head, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary:
        delta = [
            _pm(r[f"delta_{m}_mean"], r[f"delta_{m}_std"], signed=True) if f"delta_{m}_mean" in r else "—"
            for m in ("mAP", "rank1")
        ]
        lines.append(
            f"| {r['fraction']:.2f} | {r['arm']} | {r['n_images']:.0f} | {r['n_seeds']} | "
            + " | ".join(_pm(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS)
            + f" | {delta[0]} | {delta[1]} |"
        )
    return "\n".join(lines) + "\n"


def _plot_cmc(summary: list[dict], path: Path, max_rank: int = 20) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fractions = sorted({r["fraction"] for r in summary})
    fig = Figure(figsize=(4.2 * len(fractions), 3.6), dpi=110)
    axes = fig.subplots(1, len(fractions), squeeze=False)[0]
    styles = {"real": ("tab:blue", "-"), "posegen": ("tab:orange", "-"), "duplicate": ("tab:gray", "--"), "flip": ("tab:green", "--")}
    ranks = np.arange(1, max_rank + 1)
    for ax, fraction in zip(axes, fractions):
        for r in [r for r in summary if r["fraction"] == fraction]:
            color, ls = styles.get(r["arm"], ("k", ":"))
            cmc = 100 * np.asarray(r["cmc_mean"][:max_rank])
            ax.plot(ranks, cmc, color=color, ls=ls, marker="o", ms=2.5,
                    label=f"{r['arm']} (mAP {100 * r['mAP_mean']:.1f})")  # fmt: skip
        ax.set_title(f"real fraction {fraction:.2f}")
        ax.set_xlabel("rank")
        ax.set_ylabel("CMC (%)")
        ax.set_xlim(1, max_rank)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def write_report(result: dict, out_dir: str | Path) -> dict[str, str]:
    """Write the report files into ``out_dir``.

    Files: ``results.json`` (``result`` in full), ``runs.csv`` (one row per fraction × seed × arm,
    CMC ranks 1-20 as columns ``cmc1..cmc20``), ``summary.csv`` (one row per fraction × arm),
    ``summary.md`` (the Markdown table with the settings) and ``cmc.png`` (mean CMC curves, one
    panel per fraction).

    Args:
        result: the dict :func:`posegen.downstream.evaluate_downstream` builds (``config``,
            ``protocol``, ``runs``, ``summary``).
        out_dir: the output folder (created).

    Returns:
        ``{"json": path, "runs_csv": ..., "summary_csv": ..., "markdown": ..., "cmc_png": ...}`` (str).
    """
    out = Path(out_dir)
    files = {
        "json": out / "results.json",
        "runs_csv": out / "runs.csv",
        "summary_csv": out / "summary.csv",
        "markdown": out / "summary.md",
        "cmc_png": out / "cmc.png",
    }
    runs = pd.DataFrame(
        [{k: v for k, v in r.items() if k != "cmc"} | {f"cmc{i + 1}": float(r["cmc"][i]) for i in range(20)} for r in result["runs"]]
    )
    atomic_write_text(files["runs_csv"], runs.to_csv(index=False))
    summary = pd.DataFrame([{k: v for k, v in r.items() if k not in ("cmc_mean", "seeds")} for r in result["summary"]])
    atomic_write_text(files["summary_csv"], summary.to_csv(index=False))
    cfg, proto = result["config"], result["protocol"]
    gen = result.get("generator") or {}
    leaked = bool(gen.get("leaked"))
    start = "from scratch" if cfg.get("from_scratch") else f"from {cfg.get('init_weights')}"
    md = [
        "# posegen eval-downstream" + (" — LEAKED (the generator saw evaluation data; --allow-leak)" if leaked else ""),
        "",
        f"Real data: `{cfg['real_root']}` ({proto['layout']}); posegen images: `{cfg['synthetic_source']}`.",
        f"Test: {proto['n_query']} query / {proto['n_gallery']} gallery images, {proto['n_test_pids']} identities "
        f"(real only). Training identities: {proto['n_train_pids']}.",
        f"Model {cfg['model']} {start}"
        + f", loss {cfg['loss']}, {cfg['epochs']} epochs ({cfg.get('fixbase_epochs', 0)} classifier-only first; classifier lr x{cfg.get('classifier_lr_mult', 1)}), "
        f"{cfg['height']}x{cfg['width']}, batch {cfg['batch_size']}, "
        f"lr {cfg['lr']}, device {cfg['device']}; seeds {', '.join(map(str, cfg['seeds']))}.",
        "",
    ]
    if gen:
        md += ["Generator training data (leak check): " + ("**LEAKED** — " if leaked else "")
               + ("verified" if gen.get("verified") else "NOT verified") + "."]
        md += [f"- {n}" for n in gen.get("notes", [])] + [""]
    md += [
        "Percent, mean ± sample std over seeds; Δ = arm − real with the same seed (paired), mean ± std.",
        "Arms: real (torchreid flip + random erasing); posegen (real + kept posegen images whose source is kept); "
        "duplicate (real + one more copy of each of those sources: same count, no new pose); flip (real + a "
        "horizontally flipped copy of each of those sources: same count; the training already flips at random).",
        "",
        *(["**LEAKED: the generator saw evaluation images or identities; these numbers are not a fair measure.**", ""] if leaked else []),
        markdown_table(result["summary"]),
    ]
    v = verdicts(result["summary"])
    if v:
        md += ["", *v]
    if result.get("command"):
        md += ["", f"Command: `{result['command']}`", ""]
    atomic_write_text(files["markdown"], "\n".join(md))
    _plot_cmc(result["summary"], files["cmc_png"])
    paths = {k: str(v) for k, v in files.items()}
    result["files"] = paths
    atomic_write_json(files["json"], _jsonable(result))
    return paths


def _jsonable(obj):
    """NumPy types -> Python, NaN -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    return obj
