"""Pose backends against ground truth on small real crops (Market-1501 64x128, DeepFashion 176x256).

For each backend configuration, over every image of ``../shared/data/market1501-samples`` (187
crops, 64x128) and ``../shared/data/deepfashion-samples`` (179 photos, 176x256), whose
``annotations.csv`` (Pose-Transfer format, OpenPose-18, -1 missing) is read with
:func:`posegen.pose.formats.read_poses` and converted to COCO-17:

* **detected**: share of images where the backend returns a pose (no ``NoPersonFound``);
* **PCK@0.1H**: share of all annotated joints (pooled over the images) that the backend places
  within ``0.1 * H`` (Euclidean, pixels) of the annotation, ``H`` = the person height = the
  vertical extent ``max(y) - min(y)`` of that image's annotated joints. A joint counts as
  predicted when the backend returns it with score > 0 (inside the image; ``--pred-score``
  changes this); a joint of an image where no person was found counts as wrong;
* **PCK@0.1H (score >= 0.5)**: the same, counting only joints predicted with score >= 0.5
  (posegen's confidence threshold);
* **precision@0.5**: of the annotated joints the backend returns with score >= 0.5 (present for
  posegen), the share within ``0.1 * H`` of the annotation: how far a present joint can be
  trusted (MoveNet's scores are calibrated so that its present joints are comparable);
* **PCKh@0.5**: :func:`posegen.metrics.pck` with ``reference="head"`` (PATN's per-axis PCKh as
  pose-transfer papers compute it), pooled over the annotated joints of the images whose head
  box is defined;
* **per-joint PCK@0.1H**;
* **images/s**: pose estimation only, images decoded beforehand, one warm-up image excluded, one
  thread (``OMP_NUM_THREADS=1``, LiteRT ``num_threads=1``).

With ``--cuhk03`` also today's CUHK03 figure on ``../shared/data/cuhk03-detected/detected/val``
(938 crops, no annotations): the share of *all* crops with a pose that has >= 12 joints of score
>= 0.5 and the nose above both hips (y of the nose < y of each hip).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pose_gt.py [--cuhk03] \
        [--configs blazepose,blazepose-heavy,movenet,"blazepose:fallback=false"] [--results PATH]

A configuration is a backend name with optional ``:key=value,key=value`` backend options (values
parsed as Python literals, e.g. ``flip=True``); the weights of ``blazepose-heavy`` and ``movenet``
come from ``../shared/weights``. Writes ``benchmarks/results/pose_gt.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import commit as _commit  # noqa: E402
from _common import machine as _machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = {
    "market1501": SHARED / "data" / "market1501-samples",
    "deepfashion": SHARED / "data" / "deepfashion-samples",
}
CUHK03_VAL = SHARED / "data" / "cuhk03-detected" / "detected" / "val"
WEIGHTS = {
    "blazepose-heavy": SHARED / "weights" / "mediapipe" / "pose_landmark_heavy.tflite",
    "movenet": SHARED / "weights" / "movenet" / "lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite",
}
NOSE, L_HIP, R_HIP = 0, 11, 12


def parse_config(text: str) -> tuple[str, dict]:
    """``"name:key=value,key=value"`` -> ``(name, options)`` (values as Python literals)."""
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return name.strip(), options


def load_annotated(folder: Path) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """``(names, images, gt [N, 17, 3])`` of an annotated sample folder (COCO-17, score 1 = annotated)."""
    from posegen.data.images import read_image
    from posegen.pose.formats import read_poses

    ann = read_poses(folder / "annotations.csv")
    ann = ann[ann["status"] == "ok"].sort_values("path").reset_index(drop=True)
    names = ann["path"].tolist()
    images = [read_image(folder / "images" / n) for n in names]
    gt = np.stack([np.asarray(k, np.float32) for k in ann["keypoints"]])
    return names, images, gt


def run_backend(be, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """``(keypoints [N, 17, 3], found [N], seconds)``; one warm-up call excluded from the time."""
    from posegen.pose.backends import NoPersonFound

    n = len(images)
    kps = np.zeros((n, 17, 3), np.float32)
    found = np.zeros(n, bool)
    try:
        be.estimate(images[0])
    except NoPersonFound:
        pass
    t0 = time.perf_counter()
    for i, im in enumerate(images):
        try:
            kps[i] = be.estimate(im)
            found[i] = True
        except NoPersonFound:
            pass
    return kps, found, time.perf_counter() - t0


def score_against_gt(pred: np.ndarray, gt: np.ndarray, pred_score: float = 0.0) -> dict:
    """PCK@0.1H (pooled), PCK@0.1H at score >= 0.5, PCKh@0.5 (pooled) and per-joint PCK@0.1H.

    Args:
        pred: ``float32 [N, 17, 3]`` predictions in pixels (zeros where nobody was found).
        gt: ``float32 [N, 17, 3]`` annotations in pixels, score 1 = annotated.
        pred_score: a predicted joint counts when its score is > this.
    """
    from posegen.metrics.pose import pck
    from posegen.pose.keypoints import COCO17_NAMES

    ann = gt[..., 2] > 0
    ys = np.where(ann, gt[..., 1], np.nan)
    height = np.nanmax(ys, axis=1) - np.nanmin(ys, axis=1)  # [N]
    dist = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)
    close = dist < 0.1 * height[:, None]
    hit = close & (pred[..., 2] > pred_score) & ann
    hit05 = close & (pred[..., 2] >= 0.5) & ann
    present = (pred[..., 2] >= 0.5) & ann
    per_joint = {COCO17_NAMES[j]: float(hit[:, j].sum() / max(ann[:, j].sum(), 1)) for j in range(17)}
    # PCKh@0.5 pooled over joints: pck() gives the per-image share of the annotated joints
    p = pred.copy()
    p[..., 2] = np.where(pred[..., 2] > pred_score, 1.0, 0.0)
    correct = total = 0.0
    for i in range(len(gt)):
        v = pck(p[i], gt[i], alpha=0.5, reference="head", min_score=0.5)
        if not np.isnan(v):
            k = int(ann[i].sum())
            correct += v * k
            total += k
    return {
        "pck_0.1H": float(hit.sum() / ann.sum()),
        "pck_0.1H_score0.5": float(hit05.sum() / ann.sum()),
        "precision_score0.5": float(hit05.sum() / max(present.sum(), 1)),
        "pckh_0.5": float(correct / total) if total else float("nan"),
        "pckh_images": int(sum(1 for i in range(len(gt)) if not np.isnan(pck(p[i], gt[i], alpha=0.5, reference="head")))),
        "per_joint_pck_0.1H": per_joint,
        "annotated_joints": int(ann.sum()),
    }


def cuhk03_figure(kps: np.ndarray, found: np.ndarray) -> float:
    """Share of crops with >= 12 joints of score >= 0.5 and the nose above both hips."""
    conf = (kps[..., 2] >= 0.5).sum(axis=1)
    above = (kps[:, NOSE, 1] < kps[:, L_HIP, 1]) & (kps[:, NOSE, 1] < kps[:, R_HIP, 1])
    return float((found & (conf >= 12) & above).mean())


def main() -> None:
    from posegen._io import atomic_write_json, atomic_write_text
    from posegen.data import load_dataset
    from posegen.data.images import read_image
    from posegen.pose.backends import get_backend
    from posegen.pose.keypoints import COCO17_NAMES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="blazepose,blazepose-heavy,movenet", help="comma-separated ';'-free list; see module doc")
    ap.add_argument("--cuhk03", action="store_true", help="also the CUHK03 val figure (938 crops)")
    ap.add_argument("--pred-score", type=float, default=0.0)
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "pose_gt")
    args = ap.parse_args()
    for folder in [*DATASETS.values(), *([CUHK03_VAL] if args.cuhk03 else [])]:
        if not folder.exists():
            sys.exit(f"data not found: {folder} (the ../shared folder beside the repository)")
    command = " ".join([f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}", Path(sys.executable).name, *sys.argv])
    # configs are separated by '+' when options contain commas: "blazepose:flip=True,upscale=2+movenet"
    configs = [parse_config(c) for c in (args.configs.split("+") if "+" in args.configs else args.configs.split(","))]

    data = {name: load_annotated(folder) for name, folder in DATASETS.items()}
    cuhk_images = []
    if args.cuhk03:
        manifest = load_dataset(CUHK03_VAL).sort_values("path")
        cuhk_images = [read_image(CUHK03_VAL / p) for p in manifest["path"]]

    results: dict[str, dict] = {}
    for name, options in configs:
        label = name + ("" if not options else ":" + ",".join(f"{k}={v}" for k, v in options.items()))
        weights = str(WEIGHTS[name]) if name in WEIGHTS else None
        be = get_backend(name, weights, **options)
        rec: dict = {"backend": be.name, "weights": be.weights, "options": {k: repr(v) for k, v in options.items()}}
        n_all = t_all = 0.0
        for dname, (_, images, gt) in data.items():
            kps, found, dt = run_backend(be, images)
            rec[dname] = {"images": len(images), "detected": float(found.mean()), "images_per_s": len(images) / dt}
            rec[dname] |= score_against_gt(kps, gt, args.pred_score)
            n_all += len(images)
            t_all += dt
        if cuhk_images:
            kps, found, dt = run_backend(be, cuhk_images)
            rec["cuhk03_val"] = {
                "images": len(cuhk_images),
                "detected": float(found.mean()),
                "ge12_nose_above_hips": cuhk03_figure(kps, found),
                "images_per_s": len(cuhk_images) / dt,
            }
        be.close()
        rec["images_per_s"] = n_all / t_all
        results[label] = rec
        m, f = rec["market1501"], rec["deepfashion"]
        line = (
            f"{label}: market det {m['detected']:.1%} PCK@0.1H {m['pck_0.1H']:.3f} ({m['pck_0.1H_score0.5']:.3f} @0.5) "
            f"PCKh {m['pckh_0.5']:.3f} | fashion det {f['detected']:.1%} PCK@0.1H {f['pck_0.1H']:.3f} "
            f"({f['pck_0.1H_score0.5']:.3f}) PCKh {f['pckh_0.5']:.3f} | {rec['images_per_s']:.1f} img/s"
        )
        if "cuhk03_val" in rec:
            line += f" | cuhk03 {rec['cuhk03_val']['ge12_nose_above_hips']:.1%} (det {rec['cuhk03_val']['detected']:.1%})"
        print(line, flush=True)

    record = {
        "command": command,
        "commit": _commit(),
        "machine": _machine(),
        "definitions": {
            "person_height": "H = max(y) - min(y) of the image's annotated joints (pixels)",
            "pck_0.1H": "annotated joints predicted (score > pred_score) within 0.1*H (Euclidean), pooled over images; "
            "images without a detection count as all wrong",
            "pck_0.1H_score0.5": "the same with predicted score >= 0.5",
            "precision_score0.5": "of the annotated joints predicted with score >= 0.5, the share within 0.1*H",
            "pckh_0.5": "posegen.metrics.pck(reference='head', alpha=0.5), pooled over the annotated joints of images with a head box",
            "cuhk03": "share of all val crops with >= 12 joints of score >= 0.5 and nose y < both hip y",
            "images_per_s": "estimation only, decoded images, 1 thread, warm-up excluded",
        },
        "pred_score": args.pred_score,
        "results": results,
    }
    md = [
        "# Pose backends against ground truth on small real crops",
        "",
        f"Command: `{command}`  ",
        f"Commit {record['commit']}; {record['machine']} (images/s is noisy when the cores are shared).  ",
        "Data: `../shared/data/market1501-samples` (187 crops, 64x128) and `deepfashion-samples` (179, 176x256),",
        "annotations (OpenPose-18 -> COCO-17) from their `annotations.csv`.  ",
        "PCK@0.1H: annotated joints within 0.1 x the person height H (H = vertical extent of the annotated joints),",
        "pooled over images, undetected images count as wrong; a predicted joint counts at score > 0 (`@0.5`: score >= 0.5).",
        "prec.: of the annotated joints predicted with score >= 0.5 (present for posegen), the share within 0.1 x H.",
        "`auto` is the default backend (MoveNet Lightning with flip averaging, scores calibrated so that raw 0.3 -> 0.5;",
        "`movenet:present_score=0.5` = the same with raw scores).",
        "PCKh@0.5: `posegen.metrics.pck(reference='head')`, pooled. images/s: estimation only, 1 thread.",
        "CUHK03: share of the 938 val crops with >= 12 joints (score >= 0.5) and the nose above both hips.",
        "",
        "| config | Market det. | Market PCK@0.1H | (@0.5) | prec. | Market PCKh@0.5 | Fashion det. | Fashion PCK@0.1H | (@0.5) | prec. | Fashion PCKh@0.5 | CUHK03 | images/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in results.items():
        m, f = r["market1501"], r["deepfashion"]
        c = f"{r['cuhk03_val']['ge12_nose_above_hips']:.1%}" if "cuhk03_val" in r else "–"
        md.append(
            f"| `{label}` | {m['detected']:.1%} | {m['pck_0.1H']:.3f} | {m['pck_0.1H_score0.5']:.3f} | {m['precision_score0.5']:.3f} | {m['pckh_0.5']:.3f} | "
            f"{f['detected']:.1%} | {f['pck_0.1H']:.3f} | {f['pck_0.1H_score0.5']:.3f} | {f['precision_score0.5']:.3f} | {f['pckh_0.5']:.3f} | {c} | {r['images_per_s']:.1f} |"
        )
    for dname in DATASETS:
        md += ["", f"Per-joint PCK@0.1H, {dname}:", ""]
        labels = list(results)
        md += ["| joint | " + " | ".join(f"`{lb}`" for lb in labels) + " |", "| --- |" + " ---: |" * len(labels)]
        for j in COCO17_NAMES:
            md.append(f"| {j} | " + " | ".join(f"{results[lb][dname]['per_joint_pck_0.1H'][j]:.3f}" for lb in labels) + " |")
    atomic_write_json(args.results.with_suffix(".json"), record)
    atomic_write_text(args.results.with_suffix(".md"), "\n".join(md) + "\n")
    print(f"results: {args.results.with_suffix('.json')}, {args.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
