"""Sampling speed of the re-posing model: images/s by sampler, steps, batch size and guidance.

For each recipe's model (random initialisation: speed does not depend on the weights), runs
``ReposePipeline.__call__`` on synthetic source images and plausible COCO-17 poses, for every
combination of sampler (``--samplers``), step count (``--steps``), batch size (``--batch-sizes``)
and guidance (``off``: ``w_pose = w_app = 1``, one forward of B per step; ``on``: disentangled
guidance ``w_pose = 2.0, w_app = 1.5``, one batched forward of 3B per step). Each cell is timed
over ``--repeats`` calls after one warm-up call; the best (least disturbed) time is reported.

Prints a table and writes ``benchmarks/results/repose_speed.{json,md}`` with the exact command,
the commit, the device and the torch threads. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/repose_speed.py --device cpu \\
        --recipes tiny --samplers ddim,dpm++,unipc,euler --steps 10,20 --batch-sizes 1,8,32
    .venv/bin/python benchmarks/repose_speed.py --device cuda --recipes tiny,cuhk03
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from posegen._io import atomic_write_text
from posegen.recipe import load_recipe
from posegen.repose import ReposePipeline, ReposeUNet, make_scheduler
from _common import commit as _commit

REPO = Path(__file__).resolve().parents[1]
GUIDED = {"pose_guidance_scale": 2.0, "appearance_guidance_scale": 1.5}

# a standing person, (x, y) as fractions of (width, height)
_POSE = np.array(
    [[.5, .1], [.45, .08], [.55, .08], [.4, .1], [.6, .1], [.3, .25], [.7, .25], [.25, .42], [.75, .42],
     [.22, .55], [.78, .55], [.38, .55], [.62, .55], [.37, .75], [.63, .75], [.36, .93], [.64, .93]],
    np.float32,
)


def _poses(n: int, w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kp = np.zeros((n, 17, 3), np.float32)
    kp[..., 0] = _POSE[:, 0] * (w - 1) + rng.normal(0, 0.02 * w, (n, 17))
    kp[..., 1] = _POSE[:, 1] * (h - 1) + rng.normal(0, 0.02 * h, (n, 17))
    kp[..., 2] = 0.9
    return kp


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--recipes", default="tiny", help="comma-separated recipe names or paths")
    ap.add_argument("--samplers", default="ddim,dpm++,unipc,euler")
    ap.add_argument("--steps", default="10,20")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--guidance", default="off,on", help="off (w=1), on (w_pose 2, w_app 1.5: 3B forward)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. 'shared CPU')")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "repose_speed.json")
    args = ap.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    steps = [int(s) for s in args.steps.split(",")]
    batches = [int(s) for s in args.batch_sizes.split(",")]
    guidance = [g.strip() for g in args.guidance.split(",")]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    results: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "device": f"{device.type}: {dev_name}",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "dtype": args.dtype,
        "note": args.note,
        "guided_scales": GUIDED,
        "rows": [],
    }
    console = Console()
    for rname in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        recipe = load_recipe(rname)
        torch.manual_seed(0)
        unet = ReposeUNet.from_config_recipe(recipe.model, min_score=recipe.pose.min_score).eval()
        n_params = sum(p.numel() for p in unet.parameters())
        pipe = ReposePipeline(unet=unet, scheduler=make_scheduler("ddim", recipe.train))
        pipe.set_progress_bar_config(disable=True)
        pipe = pipe.to(device)
        if dtype != torch.float32:
            pipe = pipe.to(dtype=dtype)
        h, w = recipe.model.resolution
        rng = np.random.default_rng(0)
        for sampler in samplers:
            pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
            for n_steps in steps:
                for bs in batches:
                    imgs = list(rng.integers(0, 256, (bs, h, w, 3), dtype=np.uint8))
                    skp, tkp = _poses(bs, w, h, 1), _poses(bs, w, h, 2)
                    for g in guidance:
                        kw = GUIDED if g == "on" else {}

                        def call():
                            gens = [torch.Generator(device="cpu").manual_seed(i) for i in range(bs)]
                            pipe(imgs, skp, tkp, target_sizes=(w, h), num_inference_steps=n_steps,
                                 generator=gens, **kw)

                        call()  # warm-up
                        _sync(device)
                        times = []
                        for _ in range(args.repeats):
                            t0 = time.perf_counter()
                            call()
                            _sync(device)
                            times.append(time.perf_counter() - t0)
                        best = min(times)
                        row = {
                            "recipe": recipe.name, "resolution": f"{h}x{w}", "params_M": round(n_params / 1e6, 2),
                            "conditioning": recipe.model.conditioning.model_dump(),
                            "sampler": sampler, "steps": n_steps, "batch": bs, "guidance": g,
                            "seconds": round(best, 4), "images_per_s": round(bs / best, 3),
                        }
                        results["rows"].append(row)
                        console.print(
                            f"{recipe.name} {sampler} steps={n_steps} batch={bs} guidance={g}: "
                            f"{row['images_per_s']:.2f} img/s ({best:.2f} s)"
                        )

    table = Table(title=f"re-posing sampling speed ({results['device']}, torch threads {results['torch_threads']})")
    cols = ["recipe", "sampler", "steps", "batch", "guidance", "images_per_s", "seconds"]
    for c in cols:
        table.add_column(c, justify="right" if c in ("steps", "batch", "images_per_s", "seconds") else "left")
    for r in results["rows"]:
        table.add_row(*[str(r[c]) for c in cols])
    console.print(table)

    md = [
        "# Re-posing sampling speed",
        "",
        f"- command: `{results['command']}`",
        f"- commit: `{results['commit']}`",
        f"- device: {results['device']}; torch {results['torch']}; torch threads {results['torch_threads']}"
        f" (OMP_NUM_THREADS={results['omp_num_threads']}); weights dtype {args.dtype}",
        "- models: random initialisation of each recipe's model (speed does not depend on the weights)",
        f"- guidance `on`: w_pose = {GUIDED['pose_guidance_scale']}, w_app = {GUIDED['appearance_guidance_scale']}"
        " (one batched forward of 3B per step); `off`: w = 1 (one forward of B)",
        "- time: best of the repeats after one warm-up call, whole `pipe(...)` call (pose rendering,"
        " flow, sampling loop, conversion to uint8)",
    ]
    if args.note:
        md.append(f"- note: {args.note}")
    md += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results["rows"]:
        md.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, json.dumps(results, indent=2) + "\n")
    atomic_write_text(args.results.with_suffix(".md"), "\n".join(md) + "\n")
    console.print(f"wrote {args.results} and {args.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
