"""Targets ``augment`` can honour: the kept-rate of the default model with and without view-matched,
plausible target poses, on CUHK03 *val* (identities the default model never saw).

Runs :func:`posegen.augment.augment` on the first ``--limit`` val images (sorted by path) with the
``default`` recipe and the OSNet identity checks, once per variant:

- ``default``: view-matched targets (facing and torso aspect, :func:`posegen.pose.keypoints.pose_view`)
  whose pose placed on the source person is within OKS [0.5, 0.8) of the source's,
  plausible sources and targets only (:mod:`posegen.pose.plausibility`), targets aligned onto the
  source person;
- ``no view matching``: ``augment.match_view: false``;
- ``no pose-distance preference``: ``augment.target_pose_oks: null`` (targets are not preferred by
  their OKS to the source pose once placed on the source person);
- ``no plausibility``: ``augment.plausible_only: false``;
- ``no alignment``: ``augment.align_targets: false``;
- ``hands onto the torso allowed``: ``augment.avoid_hands_onto_torso: false``;
- ``no limb-motion preference``: ``augment.max_arm_motion: null`` and ``max_leg_motion: null``.

Column ``hands onto torso (kept)``: kept outputs whose target pose (placed on the source person)
holds more wrists over the torso than the source (:func:`posegen.pose.keypoints.wrists_in_torso`):
the warp lays the source's hanging forearm across the chest there.

Prints a table and writes ``benchmarks/results/augment_targets[-TAG].{json,md}``. Usage::

    .venv/bin/python benchmarks/augment_targets.py [--limit 120] [-k 2] [--variants ...] [--tag TAG]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from posegen._io import atomic_write_json, atomic_write_text
from posegen.augment import augment, summarize
from posegen.pose.backends import get_backend
from posegen.recipe import load_recipe
from _common import REPO, RESULTS, SHARED, commit

VAL = SHARED / "data" / "cuhk03-detected" / "detected" / "val"
OSNET = SHARED / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx"
VARIANTS = {
    "default": {},
    "no view matching": {"match_view": False},
    "no pose-distance preference": {"target_pose_oks": None},
    "no plausibility check": {"plausible_only": False},
    "no alignment onto the source": {"align_targets": False},
    "hands onto the torso allowed": {"avoid_hands_onto_torso": False},
    "no limb-motion preference": {"max_arm_motion": None, "max_leg_motion": None},
}


def hands_onto_torso(out: Path, manifest, min_score: float) -> int:
    """Kept synthetic rows of an augment ``out`` whose target pose, placed on the source person
    (:func:`posegen.repose.warp.align_pose`), holds more wrists over the torso than the source."""
    import numpy as np
    import pandas as pd

    from posegen.pose.keypoints import scale_keypoints, wrists_in_torso
    from posegen.repose.warp import align_pose

    poses = pd.read_parquet(out / ".posegen" / "poses.parquet").set_index("path")
    kept = manifest[manifest["synthetic"] & manifest["kept"]]
    n = 0
    for src, tgt in zip(kept["source"], kept["target_pose_source"]):
        s, t = poses.loc[src], poses.loc[tgt]
        skp = np.asarray(s["keypoints"], np.float32).reshape(17, 3)
        tkp = scale_keypoints(np.asarray(t["keypoints"], np.float32).reshape(17, 3), (int(t["width"]), int(t["height"])),
                              (int(s["width"]), int(s["height"])))  # fmt: skip
        placed = align_pose(tkp, skp, min_score=min_score)
        n += int(wrists_in_torso(placed, min_score).sum() > wrists_in_torso(skp, min_score).sum())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("-k", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--tag", default="", help="results file suffix")
    args = ap.parse_args()
    if not VAL.is_dir():
        sys.exit(f"data not found: {VAL}")
    base = load_recipe("default")
    rows = []
    t_all = time.perf_counter()
    with get_backend() as be:  # posegen's default backend, as augment uses it
        for name in args.variants:
            rec = base.model_copy(update={"augment": base.augment.model_copy(update=VARIANTS[name])})
            out = REPO / "runs" / "augment-targets" / ((f"{args.tag}-" if args.tag else "") + name.replace(" ", "-"))
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            m = augment(VAL, out, recipe=rec, backend=be, k=args.k, limit=args.limit, reid_weights=OSNET)
            s = summarize(m)
            rows.append({"variant": name, **s, "kept_rate": s["kept"] / max(1, s["generated"]),
                         "hands_onto_torso_kept": hands_onto_torso(out, m, rec.pose.min_score),
                         "minutes": (time.perf_counter() - t0) / 60})  # fmt: skip
    t = Table(title=f"augment, default model, first {args.limit} CUHK03 val images, K={args.k}")
    for c in ("variant", "generated", "kept", "kept rate", "mean OKS kept", "mean identity kept", "hands onto torso kept", "min"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["variant"], str(r["generated"]), str(r["kept"]), f"{r['kept_rate']:.0%}", f"{r['mean_oks_kept']:.2f}",
                  f"{r['mean_identity_kept']:.2f}", str(r["hands_onto_torso_kept"]), f"{r['minutes']:.1f}")  # fmt: skip
    Console(width=160).print(t)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
              "rows": rows, "seconds": time.perf_counter() - t_all}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "augment_targets" + (f"-{args.tag}" if args.tag else "")
    atomic_write_json(RESULTS / f"{stem}.json", result)
    md = [f"# Targets augment can honour\n\n`{result['command']}` at commit {result['commit']} ({result['machine']})\n",
          "| variant | generated | kept | kept rate | mean OKS (kept) | mean identity (kept) | hands onto torso (kept) | minutes |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        md.append(f"| {r['variant']} | {r['generated']} | {r['kept']} | {r['kept_rate']:.0%} | {r['mean_oks_kept']:.2f} | "
                  f"{r['mean_identity_kept']:.2f} | {r['hands_onto_torso_kept']} | {r['minutes']:.1f} |")
    md.append("")
    for r in rows:
        md.append(f"- {r['variant']}: rejected by reason {r['rejected_by_reason']}")
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
