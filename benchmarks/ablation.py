"""Ablation at tiny CPU scale: does each part of the re-posing model earn its place?

Every variant is the ``tiny`` recipe (64x32, batch 16) trained for the **same number of steps** on
the same CUHK03 train images, differing only in ``model`` flags; two more rows change only how
the last model samples. All are judged by the quality benchmark (:mod:`repose_quality`: CUHK03
val cross-view pairs, 10 and 20 steps, plus the "output = source" baseline).

=====================  =========================================================================
variant                what changes
=====================  =========================================================================
concat                 the walking-skeleton model: source + poses concatenated at the input
texture-attn           + PIDM texture encoder, UNet cross-attention to appearance tokens
pose-aligned           + RePoseDM keypoint-driven warp of source image/features, refined per level
multi-focal            + MCLD face / upper / lower-body tokens
+ disentangled CFG     the multi-focal model sampled with pose / appearance guidance scales
+ prior guidance       ... and gradient guidance of the target pose by the pose-validity prior
=====================  =========================================================================

Training and evaluation are separate so the variants can train in parallel processes::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation.py train concat --steps 600
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation.py train texture-attn --steps 600
    ...
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation.py evaluate --pairs 200

Runs live in ``runs/ablation/<variant>`` (resumable); the table goes to
``benchmarks/results/ablation.{json,md}`` with the commands and the commit.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import repose_quality as rq  # noqa: E402

from posegen._io import atomic_write_json, atomic_write_text  # noqa: E402
from posegen.data import load_dataset  # noqa: E402
from posegen.pose.backends import get_backend  # noqa: E402
from posegen.pose.extract import extract_poses  # noqa: E402
from posegen.recipe import Recipe, load_recipe  # noqa: E402
from posegen.repose import train  # noqa: E402

CUHK03_TRAIN = rq.SHARED / "data" / "cuhk03-detected" / "detected" / "train"
RUNS = rq.REPO / "runs" / "ablation"

#: trained variants: model-section overrides of the tiny recipe
VARIANTS: dict[str, dict] = {
    "concat": {"texture_attention": False, "pose_aligned": False, "focal_tokens": False},
    "texture-attn": {"texture_attention": True, "pose_aligned": False, "focal_tokens": False},
    "pose-aligned": {"texture_attention": True, "pose_aligned": True, "focal_tokens": False},
    "multi-focal": {"texture_attention": True, "pose_aligned": True, "focal_tokens": True},
}
#: sampling-only variants of the last trained model: pipeline keyword arguments
GUIDED: dict[str, dict] = {
    "+ disentangled CFG": {"pose_guidance_scale": 2.0, "appearance_guidance_scale": 1.5},
    "+ prior guidance": {"pose_guidance_scale": 2.0, "appearance_guidance_scale": 1.5, "prior_guidance_scale": 1.0},
}


def variant_recipe(name: str) -> Recipe:
    """The tiny recipe (full model, condition dropout 0.1, EMA) with the variant's conditioning flags."""
    base = load_recipe("tiny").model_dump()
    base["name"] = f"ablation-{name}"
    base["model"]["conditioning"] = dict(VARIANTS[name])
    return Recipe.model_validate(base)


def train_variant(name: str, steps: int, limit: int) -> Path:
    """Train (or resume) one variant on the first ``limit`` CUHK03 train images."""
    manifest = load_dataset(CUHK03_TRAIN)
    manifest = manifest.sort_values("path").head(limit).reset_index(drop=True)
    rq.CACHE.mkdir(parents=True, exist_ok=True)
    with get_backend("blazepose") as be:
        poses = extract_poses(manifest, CUHK03_TRAIN, be, out=rq.CACHE / f"cuhk03-train-{limit}-poses.parquet")
    t0 = time.perf_counter()
    last = [0]

    def progress(step, total, logs):
        if logs.get("event") == "step" and (step % 50 == 0 or step == total):
            print(f"[{name}] step {step}/{total} loss {logs['loss']:.4f} {time.perf_counter() - t0:.0f}s", flush=True)
        last[0] = step

    model = train(variant_recipe(name), manifest, poses, CUHK03_TRAIN, RUNS / name, steps=steps, progress=progress)
    secs = time.perf_counter() - t0
    atomic_write_json(RUNS / name / "timing.json", {"steps": steps, "seconds": secs, "threads": torch.get_num_threads()})
    return model


def evaluate(n_pairs: int, steps: list[int]) -> list[dict]:
    """Quality rows for every finished variant (+ the guided sampling rows) and the baseline."""
    import json

    from posegen.prior import load_pose_prior

    recipe = load_recipe("tiny")
    rows = []
    with get_backend("blazepose") as be:
        scorer = rq.setup(n_pairs, tuple(recipe.model.resolution), recipe, be)
        rows.append({**rq.baseline(scorer), "label": "baseline: output = source"})
        last = None
        for name in VARIANTS:
            run = RUNS / name
            if not (run / "model" / "model_index.json").is_file():
                print(f"skip {name}: not trained ({run})")
                continue
            timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").is_file() else {}
            for r in rq.evaluate_model(run, scorer, steps=steps):
                rows.append({**r, "label": name, "train_s_per_step": timing.get("seconds", float("nan")) / max(timing.get("steps", 1), 1)})
            last = (name, run)
        if last is not None:
            prior = load_pose_prior()
            for label, kw in GUIDED.items():
                kw = dict(kw)
                if "prior_guidance_scale" in kw:
                    kw["pose_prior"] = prior
                for r in rq.evaluate_model(last[1], scorer, steps=steps, guidance=kw):
                    rows.append({**r, "label": f"{last[0]} {label}", "guidance": {k: v for k, v in kw.items() if k != "pose_prior"}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one variant")
    t.add_argument("variant", choices=list(VARIANTS))
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--limit", type=int, default=2000, help="first N CUHK03 train images (sorted by path)")
    e = sub.add_parser("evaluate", help="evaluate every trained variant")
    e.add_argument("--pairs", type=int, default=200)
    e.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    args = ap.parse_args()
    if args.cmd == "train":
        train_variant(args.variant, args.steps, args.limit)
        return
    t0 = time.perf_counter()
    rows = evaluate(args.pairs, args.steps)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "train_command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation.py train VARIANT --steps N",
        "commit": rq.commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    Console(width=160).print(rq.render_table([{**r, "model": r["label"]} for r in rows], "ablation (tiny recipe, CUHK03 val pairs)"))
    atomic_write_json(rq.RESULTS / "ablation.json", result)
    atomic_write_text(
        rq.RESULTS / "ablation.md",
        rq.markdown(rows, f"# Ablation at tiny CPU scale\n\n`{result['command']}` at commit {result['commit']}"),
    )


if __name__ == "__main__":
    main()
