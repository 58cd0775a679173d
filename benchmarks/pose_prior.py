"""Pose-validity prior: train the shipped weights and measure how well the energy flags bad poses,
on both annotation styles posegen meets: Market-1501 hand/OpenPose annotations and BlazePose poses.

With ``--train``, two pose sources:

- **Market-1501** ``market-annotation-train.csv`` (Pose-Transfer CSV, OpenPose-18 in 128 x 64 crops),
  split by a seeded permutation into fitting poses (90 %) and calibration poses (10 %);
- **CUHK03 train, BlazePose** (posegen's default backend): every image of
  ``../shared/data/cuhk03-detected/detected/train`` through
  :func:`posegen.pose.extract.extract_poses` with ``get_backend("blazepose")`` (cached, resumable,
  in ``runs/bench-cache/cuhk03-train-poses.parquet``), only the poses passing
  :func:`posegen.pose.extract.usable_poses` at the recipes' thresholds (score 0.5, 8 joints); split
  **by identity** (seeded) into fitting identities (90 %) and calibration identities (10 %), so
  that no person's poses are on both sides.

:func:`posegen.prior.train_pose_prior` is fitted on the union of the two fitting sets with source
balancing (``--cuhk-share``: the share of each batch drawn from the CUHK03 poses; the rest from
Market), using only generic corruption (Gaussian noise, joint dropout, flips; none of the
evaluation perturbations). The threshold is the largest of the two per-source ``--quantile``
quantiles of the energy on the calibration sets (:func:`posegen.prior.calibrate_threshold` with
``groups``), so each style has at most ``1 - quantile`` of its calibration poses flagged. Writes
``posegen/prior/weights``. Without ``--train``, the shipped weights are evaluated.

Evaluation, on two held-out sets never used for training, calibration or model selection:
``market-annotation-test.csv`` (poses with >= ``min_joints`` joints) and the usable BlazePose poses
of **CUHK03 val** (``runs/bench-cache/cuhk03-val-poses.parquet``, extracted if absent). Each pose is
perturbed once per kind (:func:`posegen.prior.perturb_pose`: limb-joint swaps, joint jitter,
bone-length violations); the ROC AUC of the energy (torchmetrics ``binary_auroc``) per kind and
overall, the share of perturbed poses flagged, and the share of *real* poses flagged at the
threshold. ``--baseline DIR`` evaluates a second prior folder the same way (e.g. the previous
weights, from ``git show``) for a before/after table.

Prints tables and writes ``benchmarks/results/pose_prior.json`` and ``.md`` (command, commit, seed,
timings). Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pose_prior.py [--train] [--seed 0] [--steps 6000] \\
        [--cuhk-share 0.5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from posegen._io import atomic_write_json, atomic_write_text  # noqa: E402
from posegen.prior import (  # noqa: E402
    PERTURBATIONS,
    calibrate_threshold,
    evaluate_auc,
    load_pose_bank,
    load_pose_prior,
    save_pose_prior,
    train_pose_prior,
)
from posegen.prior.model import WEIGHTS_FILE, shipped_weights_dir  # noqa: E402
from _common import commit as _commit  # noqa: E402

SHARED = REPO.parent / "shared"
MARKET = SHARED / "data" / "market1501-keypoints"
CUHK03 = SHARED / "data" / "cuhk03-detected" / "detected"
CACHE = REPO / "runs" / "bench-cache"
RESULTS = REPO / "benchmarks" / "results"
MIN_SCORE, MIN_KEYPOINTS = 0.5, 8  # the recipes' pose thresholds (recipes/*.yaml, pose:)


def split_train(train_kp: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, calibration)``: a seeded 90 / 10 split of the training annotations."""
    perm = np.random.default_rng(seed).permutation(len(train_kp))
    n_cal = len(train_kp) // 10
    return train_kp[perm[n_cal:]], train_kp[perm[:n_cal]]


def split_by_identity(kp: np.ndarray, pid: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, calibration)``: poses of a seeded 90 % / 10 % split of the identities."""
    ids = np.unique(pid)
    perm = np.random.default_rng([seed, 1]).permutation(ids)
    cal_ids = perm[: max(1, len(ids) // 10)]
    cal = np.isin(pid, cal_ids)
    return kp[~cal], kp[cal]


def blazepose_bank(split: str, cache: Path, console: Console) -> tuple[np.ndarray, np.ndarray, dict]:
    """Usable BlazePose poses of every image of CUHK03 ``split`` (extracted into ``cache`` if needed).

    Returns ``(keypoints float32 [N, 17, 3] pixels, pid int64 [N], counts)``.
    """
    from posegen.data import load_dataset
    from posegen.pose.extract import extract_poses, usable_poses
    from posegen.pose.formats import keypoints_array, read_poses

    root = CUHK03 / split
    manifest = load_dataset(root)
    poses = read_poses(cache) if cache.exists() else None
    if poses is None or not set(manifest["path"]) <= set(poses["path"]):
        from posegen.pose.backends import get_backend

        console.print(f"extracting BlazePose poses of {root} into {cache} (resumable) ...")
        backend = get_backend("blazepose")
        try:
            poses = extract_poses(manifest, root, backend, out=cache)
        finally:
            backend.close()
    poses = poses[poses["path"].isin(set(manifest["path"]))].reset_index(drop=True)
    if set(poses["backend"]) != {"blazepose-full"}:
        raise SystemExit(f"{cache} holds poses of {sorted(set(poses['backend']))}, expected blazepose-full")
    use = usable_poses(poses, min_score=MIN_SCORE, min_keypoints=MIN_KEYPOINTS).to_numpy()
    pid_of = dict(zip(manifest["path"], manifest["pid"]))
    kp = keypoints_array(poses[use])
    pid = poses.loc[use, "path"].map(pid_of).to_numpy(np.int64)
    counts = {"images": int(len(poses)), "ok": int((poses["status"] == "ok").sum()), "usable": int(use.sum()),
              "identities": int(len(np.unique(pid)))}
    return kp, pid, counts


def _evaluate(model, sets: dict, seed: int) -> dict:
    out = {}
    for name, kp in sets.items():
        t0 = time.perf_counter()
        r = evaluate_auc(model, kp, seed=seed)
        e = model.score(kp)
        e = e[~np.isnan(e)]
        r["real_energy_percentiles"] = {str(q): float(np.percentile(e, q)) for q in (50, 90, 99)}
        r["eval_seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = r
    return out


def _print(console: Console, title: str, res: dict, thr: float) -> None:
    table = Table(title=title)
    for c in ("eval set", *PERTURBATIONS, "overall AUC", "perturbed flagged", "real flagged"):
        table.add_column(c)
    for name, r in res.items():
        table.add_row(
            name, *(f"{r[k]['auc']:.4f}" for k in PERTURBATIONS), f"{r['overall']['auc']:.4f}",
            f"{100 * r['overall']['detected_at_threshold']:.1f} %", f"{100 * r['real_flagged_at_threshold']:.2f} %",
        )
    console.print(table)
    console.print(f"threshold {thr:.4f}")


def _md_rows(label: str, res: dict) -> list[str]:
    rows = []
    for name, r in res.items():
        rows.append(
            f"| {label} | {name} | " + " | ".join(f"{r[k]['auc']:.4f}" for k in PERTURBATIONS)
            + f" | {r['overall']['auc']:.4f} | {r['overall']['n_real']} / {r['overall']['n_perturbed']}"
            + f" | {100 * r['overall']['detected_at_threshold']:.1f} % | {100 * r['real_flagged_at_threshold']:.2f} %"
            + f" | {r['real_energy_percentiles']['50']:.4f} / {r['real_energy_percentiles']['90']:.4f} |"
        )
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", action="store_true", help="train and overwrite posegen/prior/weights first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--quantile", type=float, default=0.99)
    ap.add_argument("--cuhk-share", type=float, default=0.5, help="share of each training batch from the CUHK03 BlazePose poses")
    ap.add_argument("--select-only", action="store_true",
                    help="with --train: stop after the calibration-split AUCs (model selection); write nothing")
    ap.add_argument("--max-eval", type=int, default=0, help="use only the first N Market test poses (0: all)")
    ap.add_argument("--baseline", type=Path, default=None, help="also evaluate the prior in this folder (before/after)")
    ap.add_argument("--cuhk-train-poses", type=Path, default=CACHE / "cuhk03-train-poses.parquet")
    ap.add_argument("--cuhk-val-poses", type=Path, default=CACHE / "cuhk03-val-poses.parquet")
    args = ap.parse_args(argv)
    if not 0 <= args.cuhk_share < 1:
        raise SystemExit("--cuhk-share must be in [0, 1)")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    for f in (MARKET / "market-annotation-train.csv", MARKET / "market-annotation-test.csv", CUHK03 / "train", CUHK03 / "val"):
        if not f.exists():
            raise SystemExit(f"needs {f} (the ../shared folder beside the repository)")
    console = Console()
    out: dict = {"seed": args.seed}
    if args.train:
        m_fit, m_cal = split_train(load_pose_bank(MARKET / "market-annotation-train.csv"), args.seed)
        c_kp, c_pid, c_counts = blazepose_bank("train", args.cuhk_train_poses, console)
        c_fit, c_cal = split_by_identity(c_kp, c_pid, args.seed)
        fit = np.concatenate([m_fit, c_fit])
        is_c = np.r_[np.zeros(len(m_fit)), np.ones(len(c_fit))]
        # per-pose weights giving the CUHK03 poses args.cuhk_share of the draws (over usable poses)
        ok = (fit[..., 2] >= MIN_SCORE).sum(1) >= MIN_KEYPOINTS
        n_m, n_c = int((ok & (is_c == 0)).sum()), int((ok & (is_c == 1)).sum())
        weights = np.where(is_c == 1, args.cuhk_share / n_c, (1 - args.cuhk_share) / n_m)
        t0 = time.perf_counter()
        model = train_pose_prior(fit, steps=args.steps, seed=args.seed, sample_weights=weights, log_every=1000)
        out["train_seconds"] = round(time.perf_counter() - t0, 1)
        data = (
            f"market-annotation-train.csv (90 % split, {n_m} poses) + BlazePose-full poses of CUHK03 "
            f"detected/train (90 % of identities, {n_c} usable poses); CUHK03 share of each batch {args.cuhk_share}"
        )
        model.register_to_config(training={**model.config.training, "data": data, "cuhk_share": args.cuhk_share})
        cal = np.concatenate([m_cal, c_cal])
        groups = np.r_[np.zeros(len(m_cal), np.int64), np.ones(len(c_cal), np.int64)]
        thr = calibrate_threshold(model, cal, args.quantile, groups=groups)
        e_m, e_c = model.score(m_cal), model.score(c_cal)
        out["training"] = {"market_fit_poses": n_m, "cuhk03_fit_poses": n_c, "cuhk03_train": c_counts,
                           "cuhk_share": args.cuhk_share, "steps": args.steps}
        out["calibration"] = {
            "quantile": args.quantile,
            "threshold": thr,
            "rule": "max over sources of the per-source quantile",
            "market": {"n_poses": int(len(m_cal)), "quantile": float(np.nanquantile(e_m, args.quantile)),
                       "flagged": float(np.mean(e_m[~np.isnan(e_m)] > thr))},
            "cuhk03_blazepose": {"n_poses": int(len(c_cal)), "quantile": float(np.nanquantile(e_c, args.quantile)),
                                 "flagged": float(np.mean(e_c[~np.isnan(e_c)] > thr))},
        }
        # AUC on the calibration poses: what the CUHK03 share was chosen by (never the eval sets)
        out["calibration"]["results"] = _evaluate(model, {"market_cal": m_cal, "cuhk03_cal_blazepose": c_cal}, args.seed)
        _print(console, "calibration splits (model selection)", out["calibration"]["results"], thr)
        if args.select_only:
            return out
        save_pose_prior(model, shipped_weights_dir())
        console.print(f"trained in {out['train_seconds']} s; threshold {thr:.4f}; wrote {shipped_weights_dir()}")
    model = load_pose_prior()
    out["weights_bytes"] = (shipped_weights_dir() / WEIGHTS_FILE).stat().st_size
    out["config"] = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    test_kp = load_pose_bank(MARKET / "market-annotation-test.csv", min_joints=model.config.min_joints)
    if args.max_eval:
        test_kp = test_kp[: args.max_eval]
    val_kp, _, val_counts = blazepose_bank("val", args.cuhk_val_poses, console)
    out["eval_sets"] = {"market_test": {"poses": int(len(test_kp))}, "cuhk03_val_blazepose": val_counts}
    sets = {"market_test": test_kp, "cuhk03_val_blazepose": val_kp}
    out["results"] = _evaluate(model, sets, args.seed)
    _print(console, "pose prior (shipped): AUC real vs perturbed, flagged at the threshold", out["results"], model.config.threshold)
    if args.baseline is not None:
        base = load_pose_prior(args.baseline)
        out["baseline"] = {"folder": str(args.baseline), "threshold": float(base.config.threshold),
                           "training": base.config.training, "results": _evaluate(base, sets, args.seed)}
        _print(console, f"baseline prior ({args.baseline})", out["baseline"]["results"], base.config.threshold)

    command = " ".join([f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}", ".venv/bin/python", "benchmarks/pose_prior.py", *(argv if argv is not None else sys.argv[1:])])
    out.update(command=command, commit=_commit(), machine=f"{platform.machine()} {platform.processor() or ''}".strip(), torch=torch.__version__)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "pose_prior.json", out)

    res = out["results"]
    lines = [
        "# Pose-validity prior: real vs perturbed poses, Market-1501 annotations and BlazePose",
        "",
        f"Command: `{command}`  ",
        f"Commit: `{out['commit']}`, seed {args.seed}, torch {torch.__version__}, one CPU thread.  ",
    ]
    if args.train:
        cal = out["calibration"]
        lines.append(
            f"Training ({out['train_seconds']} s, {args.steps} steps): {out['training']['market_fit_poses']} Market-1501 "
            f"training poses (90 % of market-annotation-train.csv) + {out['training']['cuhk03_fit_poses']} usable "
            f"BlazePose-full poses of CUHK03 detected/train (90 % of its identities; {c_counts['usable']} of "
            f"{c_counts['images']} images usable at score 0.5 / 8 joints), {args.cuhk_share:.0%} of each batch from CUHK03.  "
        )
        lines.append(
            f"Threshold = max of the per-source {args.quantile:.0%} quantiles on the calibration poses "
            f"(Market: 10 % of the train annotations, {cal['market']['n_poses']} poses, quantile {cal['market']['quantile']:.4f}; "
            f"CUHK03: the other 10 % of train identities, {cal['cuhk03_blazepose']['n_poses']} poses, quantile "
            f"{cal['cuhk03_blazepose']['quantile']:.4f}) = **{cal['threshold']:.4f}**; calibration poses flagged: "
            f"Market {100 * cal['market']['flagged']:.2f} %, CUHK03 {100 * cal['cuhk03_blazepose']['flagged']:.2f} %.  "
        )
    lines += [
        f"Weights: {out['weights_bytes'] / 1024:.0f} KiB. Evaluation sets (held out; never used for training, "
        f"calibration or model selection): `market_test` = {len(test_kp)} poses of market-annotation-test.csv with "
        f">= {model.config.min_joints} joints; `cuhk03_val_blazepose` = the {val_counts['usable']} usable BlazePose-full "
        f"poses of the {val_counts['images']} CUHK03 detected/val images. One perturbed copy per pose and kind.",
        "",
        "| prior | eval set | AUC swap | AUC jitter | AUC bone | AUC overall | real / perturbed "
        "| perturbed flagged | **real flagged** | real energy p50 / p90 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *_md_rows(f"shipped (thr {model.config.threshold:.4f})", res),
    ]
    if args.train:
        lines += _md_rows("shipped, calibration splits", out["calibration"]["results"])
    if args.baseline is not None:
        lines += _md_rows(f"baseline (thr {out['baseline']['threshold']:.4f})", out["baseline"]["results"])
        lines += ["", f"Baseline: the prior in `{args.baseline}` (`--baseline`; training data: "
                  f"{out['baseline']['training'].get('data', '?')}; {out['baseline']['training'].get('n_train_poses', '?')} poses)."]
    lines += [
        "",
        "`real flagged` is the share of real held-out poses with energy above the threshold (what `augment` "
        "would reject as implausible targets); `perturbed flagged` the share of perturbed copies above it.",
        "",
        "Perturbations (posegen/prior/perturb.py): `swap` exchanges one left/right limb joint pair or an "
        "arm/leg joint of one side (only exchanges moving joints >= 0.3 torso lengths; poses without one are "
        "skipped); `jitter` moves 3-5 joints by 0.2-0.5 torso lengths; `bone` scales one limb bone x0.3 or x2.5 "
        "with its children following. Training used only Gaussian noise, joint dropout and flips.",
        "",
        "Note on model selection: the training noise range (0.005-0.15 RMS radii) was chosen for the first, "
        "Market-only prior over (0.02-0.6) and (0.01-0.3) by the AUC on the Market calibration split; an earlier "
        "look at the first 4000 Market test poses had pointed the same way, so the Market test AUC is not perfectly "
        "untouched. The CUHK03 share of each batch (`--cuhk-share`) was chosen between 0.33 (about proportional to "
        "the pose counts) and 0.5 on the calibration splits only (`--train --select-only --cuhk-share X`, which "
        "prints the calibration rows and writes nothing): the overall AUCs tied (Market 0.9665 vs 0.9642, CUHK03 "
        "0.9710 vs 0.9723) and 0.5 flagged fewer real CUHK03 calibration poses (0.15 % vs 0.76 %); the evaluation "
        "sets were not looked at for it.",
    ]
    atomic_write_text(RESULTS / "pose_prior.md", "\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    main()
