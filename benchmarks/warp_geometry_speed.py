"""What the limb warp's geometry costs ``augment`` outside the model: per pair and per source.

On real CUHK03 *val* poses (the default pose backend's, cached by ``benchmarks/repose_quality.py``):

- ``limb_flow``: the constrained warp (:data:`posegen.repose.warp.CONSTRAINED_WARP`) of the
  same-view pairs (``benchmarks/quality_pairs_same_view.csv``, target placed on the source) on
  the 256x128 frame, in batches of 4 (``augment``'s targets per source); seconds per pair.
- ``foreign_fraction`` and ``invented_fraction``: the filter's two pose-only checks of one
  output, as :func:`posegen.filter.artifacts.artifact_scores` runs them per image; seconds per pair.
- target choice: :func:`posegen.augment.targets.choose_targets` with the default recipe's view
  matching, OKS band and honour check (:func:`posegen.augment.run._honour_check`) on the first
  ``--sources`` val images, the whole val set as the pose bank, ``k`` 4; seconds per source.

Run it on two versions of the code side by side (``PYTHONPATH=<worktree>`` imports another
checkout's ``posegen``). Prints a table and writes ``benchmarks/results/warp_geometry_speed[-TAG].{json,md}``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/warp_geometry_speed.py --tag after
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import posegen
from posegen._io import atomic_write_json, atomic_write_text
from posegen.augment.run import _honour_check, _prior_energies
from posegen.augment.targets import choose_targets
from posegen.data.images import read_image
from posegen.filter.artifacts import foreign_fraction, invented_fraction
from posegen.pose.backends import DEFAULT_BACKEND, get_backend
from posegen.pose.keypoints import scale_keypoints
from posegen.recipe import load_recipe
from posegen.repose.warp import CONSTRAINED_WARP, align_pose, limb_flow
from _common import RESULTS, commit, machine
from repose_quality import CUHK03_VAL, load_same_view_pairs, val_poses

FRAME = (256, 128)


def _timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=96, help="same-view pairs timed for the per-pair rows")
    ap.add_argument("--sources", type=int, default=60, help="sources of the target-choice row")
    ap.add_argument("--tag", default="", help="results file suffix")
    args = ap.parse_args()

    with get_backend(DEFAULT_BACKEND) as be:
        manifest, poses = val_poses(be)
    pairs = load_same_view_pairs(manifest, poses).head(args.pairs)
    kp = {p: np.asarray(k, np.float32).reshape(17, 3) for p, k in zip(poses["path"], poses["keypoints"]) if k is not None}
    size = dict(zip(poses["path"], zip(poses["width"], poses["height"])))
    recipe = load_recipe("default")
    ms = recipe.pose.min_score

    # per pair: the warp at 256x128 (batches of 4) and the filter's two pose-only checks
    src = np.stack([scale_keypoints(kp[s], size[s], (FRAME[1], FRAME[0])) for s in pairs["source"]])
    tgt = np.stack([scale_keypoints(kp[t], size[t], (FRAME[1], FRAME[0])) for t in pairs["target"]])
    tgt = align_pose(tgt, src, min_score=ms)
    n = len(pairs)
    rows = {}
    rows["limb_flow"] = _timed(lambda: [limb_flow(src[i : i + 4], tgt[i : i + 4], FRAME, min_score=ms, **CONSTRAINED_WARP)
                                        for i in range(0, n, 4)], 2) / n  # fmt: skip
    rows["foreign_fraction"] = _timed(lambda: [foreign_fraction(src[i], tgt[i], FRAME, min_score=ms) for i in range(n)]) / n
    images = {s: read_image(CUHK03_VAL / s) for s in pairs["source"]}
    in_src = [align_pose(kp[t], kp[s], min_score=ms) for s, t in zip(pairs["source"], pairs["target"])]
    rows["invented_fraction"] = _timed(
        lambda: [invented_fraction(images[s], kp[s], in_src[i], min_score=ms) for i, s in enumerate(pairs["source"])]
    ) / n

    # per source: the target choice with the honour check
    usable = poses[[p in kp for p in poses["path"]]]
    pose_of = usable.set_index("path")
    bank = manifest[manifest["path"].isin(usable["path"])][["path", "pid"]].reset_index(drop=True)
    energy, max_energy = _prior_energies(np.stack([kp[p] for p in bank["path"]]), recipe)
    bank = bank.assign(prior_energy=energy, keypoints=[kp[p] for p in bank["path"]])
    sources = bank.head(args.sources)[["path", "pid", "keypoints"]]
    a = recipe.augment
    t0 = time.perf_counter()
    tasks = choose_targets(
        sources, bank, k=a.k, seed=0, other_pids=a.target_from_other_pids, max_energy=max_energy,
        match_view=a.match_view, view_tolerance=a.view_tolerance, min_score=ms, pose_oks_range=a.target_pose_oks,
        honour=_honour_check(recipe, pose_of),
    )  # fmt: skip
    rows["target choice (per source)"] = (time.perf_counter() - t0) / len(sources)
    chosen = hashlib.md5(tasks[["source", "k", "target"]].to_csv(index=False).encode()).hexdigest()[:12]
    not_generated = int((tasks["reason"] != "").sum())

    table = Table(title=f"warp geometry, one process, torch threads {torch.get_num_threads()}")
    table.add_column("what")
    table.add_column("ms", justify="right")
    for k, v in rows.items():
        table.add_row(k, f"{1000 * v:.1f}")
    console = Console()
    console.print(table)
    console.print(f"target choice: {len(tasks)} rows, {not_generated} rejected before generation; targets digest {chosen}")

    cmd = " ".join([Path(sys.executable).name, *sys.argv])
    where = str(Path(posegen.__file__).resolve().parent.parent)
    result = {"command": cmd, "commit": commit(), "posegen_from": where, "machine": machine(),
              "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "pairs": n, "sources": len(sources), "seconds": rows, "target_rows": len(tasks),
              "rejected_before_generation": not_generated, "targets_digest": chosen}  # fmt: skip
    stem = "warp_geometry_speed" + (f"-{args.tag}" if args.tag else "")
    atomic_write_json(RESULTS / f"{stem}.json", result)
    md = [
        "# What the limb warp's geometry costs augment", "",
        f"`{cmd}` at commit {result['commit']}, posegen imported from `{where}` ({result['machine']}; "
        f"torch threads {result['torch_threads']})", "",
        f"{n} same-view CUHK03 val pairs (per pair), {len(sources)} val sources with the val set as the pose bank "
        f"(per source, k {a.k}).", "",
        "| what | ms |", "| --- | ---: |",
        *(f"| {k} | {1000 * v:.1f} |" for k, v in rows.items()), "",
        f"Target choice: {len(tasks)} rows, {not_generated} rejected before generation; digest of the (source, k, target) "
        f"choices {chosen}.", "",
    ]  # fmt: skip
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(md))


if __name__ == "__main__":
    main()
