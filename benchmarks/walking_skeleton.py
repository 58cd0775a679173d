"""Walking-skeleton measurements on real CUHK03 images (this machine's CPU).

Measures, in one run:

1. pose extraction (BlazePose full) images/s over ``--pose-images`` CUHK03 train images;
2. the tiny recipe's training time on the first ``--limit`` images (their same-pid pairs);
3. ``augment`` with that model over the same images: generated images/s (sampling + filter +
   writing) and kept / rejected counts by reason.

Prints a table and writes ``benchmarks/results/walking_skeleton.json`` (with the command, the
commit and the machine). Usage::

    .venv/bin/python benchmarks/walking_skeleton.py [--limit 120] [--pose-images 300] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from posegen.augment import augment, summarize
from posegen.data import load_dataset
from posegen.pose.backends import get_backend
from posegen.pose.extract import extract_poses, pose_summary
from posegen.recipe import load_recipe
from posegen.repose import train
from _common import commit as _commit

REPO = Path(__file__).resolve().parents[1]
CUHK03_TRAIN = REPO.parent / "shared" / "data" / "cuhk03-detected" / "detected" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=CUHK03_TRAIN)
    ap.add_argument("--limit", type=int, default=120, help="images for training and augment")
    ap.add_argument("--pose-images", type=int, default=300, help="images for the pose throughput")
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--train-steps", type=int, default=None, help="override the recipe's steps")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-walking-skeleton")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "walking_skeleton.json")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"data not found: {args.data} (the ../shared folder beside the repository)")
    args.work.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(args.recipe)
    results: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "recipe": recipe.name,
    }

    manifest = load_dataset(args.data)
    with get_backend("blazepose") as be:
        # 1. pose extraction throughput (fresh output file: nothing skipped)
        sub = manifest.head(args.pose_images)
        out = args.work / "poses-throughput.parquet"
        out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        poses_all = extract_poses(sub, args.data, be, out=out)
        dt = time.perf_counter() - t0
        s = pose_summary(poses_all)
        results["pose"] = {"images": len(sub), "seconds": dt, "images_per_s": len(sub) / dt, **s}

        # 2. training the recipe on the first --limit images
        chosen = manifest.head(args.limit)
        poses = poses_all[poses_all["path"].isin(chosen["path"])]
        if len(poses) < len(chosen):
            poses = extract_poses(chosen, args.data, be, out=args.work / "poses-limit.parquet")
        run_dir = args.work / f"train-{recipe.name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        train(recipe, chosen, poses, args.data, run_dir, steps=args.train_steps)
        dt = time.perf_counter() - t0
        steps = args.train_steps or recipe.train.steps
        results["train"] = {"steps": steps, "batch_size": recipe.train.batch_size, "seconds": dt, "s_per_step": dt / steps}

        # 3. augment with that model
        out_dir = args.work / "augment"
        t0 = time.perf_counter()
        stage: dict[str, list[float]] = {}

        def progress(name, done, total):
            now = time.perf_counter()
            stage.setdefault(name, [now, done, now, done])[2:] = [now, done]

        m = augment(
            args.data, out_dir, recipe=recipe, backend=be, model=run_dir, limit=args.limit,
            overwrite=True, progress=progress,
        )  # fmt: skip
        total = time.perf_counter() - t0
        t_start, n_start, t_end, n_end = stage["generate"]
        summary = summarize(m)
        results["augment"] = {
            "sources": args.limit, "k": recipe.augment.k, "sampler": recipe.sample.scheduler,
            "steps": recipe.sample.steps, "seconds_total": total, "generate_seconds": t_end - t_start,
            "generated_per_s": (n_end - n_start) / max(t_end - t_start, 1e-9), **summary,
        }  # fmt: skip

    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=float) + "\n")
    table = Table(title=f"walking skeleton on {args.data.name} ({results['machine']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    p, t, a = results["pose"], results["train"], results["augment"]
    table.add_row("pose extraction (BlazePose full)", f"{p['images_per_s']:.1f} images/s over {p['images']}")
    table.add_row("  found / >= 12 confident keypoints", f"{p['ok']}/{p['images']} / {100 * p['share_ge12']:.0f}%")
    table.add_row(f"train {recipe.name} ({t['steps']} steps, batch {t['batch_size']})", f"{t['seconds']:.0f} s ({t['s_per_step']:.3f} s/step)")
    table.add_row(f"augment generate+filter ({a['sampler']} {a['steps']} steps)", f"{a['generated_per_s']:.2f} images/s")
    table.add_row("augment total", f"{a['seconds_total']:.0f} s")
    table.add_row("generated / kept / rejected", f"{a['generated']} / {a['kept']} / {a['rejected']}")
    for reason, n in a["rejected_by_reason"].items():
        table.add_row(f"  rejected: {reason}", str(n))
    Console().print(table)
    print(f"written: {args.results}")


if __name__ == "__main__":
    main()
