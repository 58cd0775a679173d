"""Pose backend benchmark on real CUHK03 crops (this machine's CPU).

For each backend, over the same ``--images`` CUHK03 train crops (evenly spaced over the sorted
file list, so every identity range and both camera views are sampled):

* **images/s**: pose estimation only (images decoded beforehand, one warm-up image excluded),
  one thread (``OMP_NUM_THREADS=1``, LiteRT/onnxruntime ``num_threads=1``);
* **found**: share of images with a pose (no ``NoPersonFound``);
* **>= 12 kp**: share of *all* images with at least 12 joints of score >= ``--min-score`` (0.5,
  posegen's default confidence, as in ``pose_summary``); also at 0.3;
* **agreement** between every pair of backends: per COCO-17 joint, the mean distance between the
  two backends' positions divided by the box height (the crop is the box: the image height),
  over images where both give the joint a score >= ``--min-score``; and the mean over joints.

Prints the tables and writes ``benchmarks/results/pose.json`` and ``benchmarks/results/pose.md``
(with the command, the commit and the machine). Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pose.py [--images 300] [--backends movenet,blazepose]
        [--rtmpose-weights FILE.onnx] [--mmpose-config CFG.py --mmpose-checkpoint CKPT.pth]

Backends with weights in ``../shared/weights`` (MoveNet Lightning int8, BlazePose heavy) and
mediapipe's bundled BlazePose full run by default (BlazePose lite only when the mediapipe wheel
bundles it: otherwise mediapipe would download it); RTMPose/DWPose/mmpose run when their
local files are given.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from _common import commit as _commit  # noqa: E402
from _common import machine as _machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CUHK03_TRAIN = SHARED / "data" / "cuhk03-detected" / "detected" / "train"
MOVENET = SHARED / "weights" / "movenet" / "lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
BLAZEPOSE_HEAVY = SHARED / "weights" / "mediapipe" / "pose_landmark_heavy.tflite"


def _specs(args) -> list[tuple[str, str | None, dict]]:
    """(name, weights, options) of the backends to run."""
    specs = {"blazepose": ("blazepose", None, {})}
    specs |= {
        "blazepose-heavy": ("blazepose-heavy", str(BLAZEPOSE_HEAVY), {}),
        "movenet": ("movenet", str(MOVENET), {}),
    }
    if args.rtmpose_weights:
        specs["rtmpose"] = ("rtmpose", str(args.rtmpose_weights), {})
    if args.dwpose_weights:
        specs["dwpose"] = ("dwpose", str(args.dwpose_weights), {})
    if args.mmpose_checkpoint:
        specs["mmpose"] = ("mmpose", str(args.mmpose_checkpoint), {"config": str(args.mmpose_config)})
    names = args.backends.split(",") if args.backends else list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        sys.exit(f"unknown or unconfigured backends {unknown}; available: {list(specs)}")
    return [specs[n] for n in names]


def main() -> None:
    from posegen._io import atomic_write_json, atomic_write_text
    from posegen.data import load_dataset
    from posegen.data.images import read_image
    from posegen.pose.backends import NoPersonFound, get_backend
    from posegen.pose.keypoints import COCO17_NAMES, empty_keypoints, num_confident

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=CUHK03_TRAIN)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--backends", default="", help="comma-separated subset (default: all available)")
    ap.add_argument("--min-score", type=float, default=0.5)
    ap.add_argument("--rtmpose-weights", type=Path, default=None)
    ap.add_argument("--dwpose-weights", type=Path, default=None)
    ap.add_argument("--mmpose-config", type=Path, default=None)
    ap.add_argument("--mmpose-checkpoint", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "pose")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"data not found: {args.data} (the ../shared folder beside the repository)")
    console = Console()
    command = " ".join([f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}", Path(sys.executable).name, *sys.argv])

    manifest = load_dataset(args.data).sort_values("path").reset_index(drop=True)
    idx = np.unique(np.linspace(0, len(manifest) - 1, min(args.images, len(manifest))).round().astype(int))
    paths = manifest["path"].iloc[idx].tolist()
    images = [read_image(args.data / p) for p in paths]
    heights = np.array([im.shape[0] for im in images], dtype=np.float64)
    n = len(images)

    per_backend: dict[str, dict] = {}
    poses: dict[str, np.ndarray] = {}
    for name, weights, options in _specs(args):
        t_load = time.perf_counter()
        be = get_backend(name, weights, **options)
        t_load = time.perf_counter() - t_load
        kps = np.zeros((n, 17, 3), np.float32)
        found = np.zeros(n, bool)
        try:
            be.estimate(images[0])  # warm-up
        except NoPersonFound:
            pass
        t0 = time.perf_counter()
        for i, im in enumerate(images):
            try:
                kps[i] = be.estimate(im)
                found[i] = True
            except NoPersonFound:
                kps[i] = empty_keypoints()
        dt = time.perf_counter() - t0
        be.close()
        nconf = num_confident(kps, args.min_score)
        per_backend[be.name] = {
            "backend": name,
            "weights": be.weights,
            "images": n,
            "seconds": dt,
            "images_per_s": n / dt,
            "load_seconds": t_load,
            "found": float(found.mean()),
            "share_ge12": float((nconf >= 12).mean()),
            "share_ge12_at_0.3": float((num_confident(kps, 0.3) >= 12).mean()),
            "mean_confident": float(nconf.mean()),
        }
        poses[be.name] = kps
        console.print(f"{be.name}: {n / dt:.1f} images/s, >=12 kp {per_backend[be.name]['share_ge12']:.1%}")

    agreement: dict[str, dict] = {}
    for a, b in itertools.combinations(poses, 2):
        pa, pb = poses[a], poses[b]
        both = (pa[..., 2] >= args.min_score) & (pb[..., 2] >= args.min_score)
        dist = np.linalg.norm(pa[..., :2] - pb[..., :2], axis=-1) / heights[:, None]
        per_joint = {
            COCO17_NAMES[j]: (float(dist[both[:, j], j].mean()) if both[:, j].any() else None) for j in range(17)
        }
        vals = [v for v in per_joint.values() if v is not None]
        agreement[f"{a} vs {b}"] = {
            "mean": float(np.mean(vals)) if vals else None,
            "pairs_compared": int(both.sum()),
            "per_keypoint": per_joint,
        }

    record = {
        "command": command,
        "commit": _commit(),
        "machine": _machine(),
        "data": str(args.data),
        "images": n,
        "image_selection": f"{n} evenly spaced over the sorted file list of {args.data.name} ({len(manifest)} images)",
        "min_score": args.min_score,
        "backends": per_backend,
        "agreement": agreement,
        "agreement_definition": "per joint: mean |p_a - p_b| / image (box) height over images where both scores >= min_score",
    }

    t = Table(title=f"pose backends on {n} CUHK03 crops ({record['machine']})")
    for col in ("backend", "images/s", "found", f">=12 kp (>= {args.min_score})", ">=12 kp (>= 0.3)", "mean conf. kp"):
        t.add_column(col, justify="right", no_wrap=(col == "backend"))
    md = [
        "# Pose backends on real CUHK03 crops",
        "",
        f"Command: `{command}`  ",
        f"Commit {record['commit']}; {record['machine']}.  ",
        f"Images: {record['image_selection']}; one thread per backend; images/s = pose estimation only.  ",
        f"Confident joint: score >= {args.min_score}. Agreement: {record['agreement_definition']}.",
        "",
        f"| backend | weights | images/s | found | >= 12 kp (score >= {args.min_score}) | >= 12 kp (score >= 0.3) | mean confident kp |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for bname, r in per_backend.items():
        t.add_row(bname, f"{r['images_per_s']:.1f}", f"{r['found']:.1%}", f"{r['share_ge12']:.1%}", f"{r['share_ge12_at_0.3']:.1%}", f"{r['mean_confident']:.1f}")
        md.append(
            f"| {bname} | `{Path(r['weights']).name if '/' in r['weights'] else r['weights']}` | {r['images_per_s']:.1f} | {r['found']:.1%} | "
            f"{r['share_ge12']:.1%} | {r['share_ge12_at_0.3']:.1%} | {r['mean_confident']:.1f} |"
        )
    console.print(t)
    if agreement:
        pairs = list(agreement)
        t2 = Table(title="agreement: mean keypoint distance / box height")
        t2.add_column("joint")
        for p in pairs:
            t2.add_column(p, justify="right")
        md += ["", "Agreement (mean keypoint distance / box height; lower = closer):", ""]
        md += ["| joint | " + " | ".join(pairs) + " |", "| --- |" + " ---: |" * len(pairs)]

        def fmt(v):
            return "–" if v is None else f"{v:.3f}"

        for j in COCO17_NAMES:
            cells = [fmt(agreement[p]["per_keypoint"][j]) for p in pairs]
            t2.add_row(j, *cells)
            md.append(f"| {j} | " + " | ".join(cells) + " |")
        means = [fmt(agreement[p]["mean"]) for p in pairs]
        t2.add_row("mean", *means)
        md.append("| **mean** | " + " | ".join(means) + " |")
        md.append("| joints compared | " + " | ".join(str(agreement[p]["pairs_compared"]) for p in pairs) + " |")
        console.print(t2)
    atomic_write_json(args.results.with_suffix(".json"), record)
    atomic_write_text(args.results.with_suffix(".md"), "\n".join(md) + "\n")
    console.print(f"results: {args.results.with_suffix('.json')}, {args.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
