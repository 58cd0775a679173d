"""Identity scores on real fashion photos: does a person re-ID model tell garments apart?

Protocol: the 179 real DeepFashion In-shop photos of ``../shared/data/deepfashion-samples/images``
(83 items; an item = one garment, its ``pid``). Every pair of two different photos is scored with
each similarity below; **same-item** pairs (other view, often another shot of the model) must pass
the filter's identity checks, **different-item** pairs should not. Also reported on the 95 pairs of
``pairs.csv`` (same item, another view: the pairs protocol's sources and targets).

Similarities (cosine of L2-normalised embeddings):

- ``osnet``: OSNet x0.25 (MSMT17) ONNX re-ID, the images resized to 256x128 as the filter does;
- ``osnet-letterbox``: the same, the 176x256 photo letterboxed into 256x128 (no squeeze);
- ``colour-histogram``: :class:`posegen.filter.garment.ColourHistogramEmbedder` (foreground HSV
  histograms, Bhattacharyya coefficient), at a few bin counts;
- ``taef2-latent``: the TAEF2 latent (the default model's autoencoder) of the 256x176 photo,
  averaged over the foreground, as a vector.

**Filter thresholds** (the other fashion-dependent checks, calibrated on CUHK03 crops): on the 95
pairs, with the ground-truth keypoints of ``annotations.csv``, the near-copy SSIM (SSIM(target,
source) in the 256x128 comparison frame, as :func:`posegen.filter.filter_batch` computes it) and the
smear score (:func:`posegen.filter.artifacts.artifact_scores` ``sharpness_ratio``) of (a) the real
target photo against the source (another real photo of the item: must pass) and (b) the source sent
through the default model's 256x128 letterbox and back (the resolution every output of the default
model loses, 176 -> 128 px wide), reported as percentiles.

For each similarity: mean same-item and different-item similarity, ROC AUC (probability that a random
same-item pair scores above a random different-item pair), the 10th percentile of the same-item
similarities (the threshold rule of the CUHK03 recipes: 90 % of real same-identity pairs pass) and
the share of different-item pairs that pass it (false accepts).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fashion_identity.py

Writes ``benchmarks/results/fashion_identity.{json,md}``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from posegen._io import atomic_write_json, atomic_write_text
from posegen.data import load_dataset
from posegen.data.images import read_image
from _common import RESULTS, SHARED, commit, machine

FASHION = SHARED / "data" / "deepfashion-samples"
OSNET = SHARED / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx"


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(random positive > random negative), ties counting half (Mann-Whitney U / (n_pos n_neg))."""
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):  # average ranks of ties
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def embed_osnet(images, letterbox: bool) -> np.ndarray:
    from posegen.latent import letterbox_params
    from posegen.metrics import ReidEmbedder

    emb = ReidEmbedder(OSNET)
    if letterbox:
        images = [letterbox_params((im.shape[1], im.shape[0]), (256, 128)).image_to_frame(im) for im in images]
    return emb.embed(images)


def embed_taef2(images) -> np.ndarray:
    import torch

    from posegen.filter.garment import ColourHistogramEmbedder
    from posegen.latent.taef2 import load_taef2

    ae = load_taef2()
    fgm = ColourHistogramEmbedder(size=(32, 22))
    out = []
    with torch.no_grad():
        for im in images:
            x = torch.from_numpy(np.asarray(im)).permute(2, 0, 1)[None].float() / 255.0
            x = torch.nn.functional.interpolate(x, size=(256, 176), mode="bilinear", align_corners=False)
            z = ae.encode(x)[0]  # [32, 32, 22]
            m = torch.from_numpy(fgm.foreground(im)).float()
            v = (z * m).sum((1, 2)) / m.sum().clamp(min=1)
            out.append(v.numpy())
    e = np.stack(out).astype(np.float32)
    e -= e.mean(0, keepdims=True)  # centre: a cosine of raw latent means is dominated by the shared offset
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def stats(sim: np.ndarray, same: np.ndarray, pair_idx: np.ndarray) -> dict:
    iu = np.triu_indices(len(sim), 1)
    s, m = sim[iu], same[iu]
    pos, neg = s[m], s[~m]
    thr = float(np.percentile(pos, 10))
    p95 = sim[pair_idx[:, 0], pair_idx[:, 1]]
    return {
        "same_item_mean": float(pos.mean()), "different_item_mean": float(neg.mean()), "auc": auc(pos, neg),
        "same_item_p10": thr, "different_item_pass_rate_at_p10": float((neg >= thr).mean()),
        "pairs95_mean": float(p95.mean()), "pairs95_pass_rate_at_p10": float((p95 >= thr).mean()),
        "n_same": int(len(pos)), "n_different": int(len(neg)),
    }  # fmt: skip


def _quantiles(v) -> dict:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return {"n": int(len(v)), **{f"p{q}": float(np.percentile(v, q)) for q in (1, 5, 10, 50, 90, 99)}}


def thresholds(df, images, pairs, index) -> dict:
    """Near-copy SSIM and sharpness ratio of real pairs and of the letterbox round trip (docstring)."""
    from posegen.filter.artifacts import artifact_scores
    from posegen.latent import letterbox_params
    from posegen.metrics import ssim
    from posegen.pose.formats import keypoints_array, read_poses
    from posegen.repose.render import resize_image

    poses = read_poses(FASHION / "annotations.csv")
    kp = dict(zip(poses["path"], keypoints_array(poses)))
    ss, sharp_real, sharp_frame = [], [], []
    for a, b in zip(pairs["from"], pairs["to"]):
        src, tgt = images[index[a]], images[index[b]]
        ss.append(float(ssim(resize_image(tgt, (256, 128)), resize_image(src, (256, 128)))[0]))
        sharp_real.append(artifact_scores(tgt, src, kp[b], kp[a])["sharpness_ratio"])
        box = letterbox_params((src.shape[1], src.shape[0]), (256, 128))
        rt = box.frame_to_image(box.image_to_frame(src))
        sharp_frame.append(artifact_scores(rt, src, kp[a], kp[a])["sharpness_ratio"])
    return {"source_ssim_real": _quantiles(ss), "sharpness_real": _quantiles(sharp_real), "sharpness_frame": _quantiles(sharp_frame)}


def main() -> None:
    from posegen.filter.garment import ColourHistogramEmbedder

    if not (FASHION / "images").is_dir():
        sys.exit(f"data not found: {FASHION} (the ../shared folder beside the repository)")
    t0 = time.perf_counter()
    df = load_dataset(FASHION / "images")
    images = [read_image(FASHION / "images" / p) for p in df["path"]]
    pids = df["pid"].to_numpy()
    same = pids[:, None] == pids[None, :]
    index = {p: i for i, p in enumerate(df["path"])}
    pairs = pd.read_csv(FASHION / "pairs.csv")
    pair_idx = np.array([[index[a], index[b]] for a, b in zip(pairs["from"], pairs["to"])])
    scorers = {
        "osnet (resized to 256x128, as the filter)": lambda: embed_osnet(images, False),
        "osnet (letterboxed into 256x128)": lambda: embed_osnet(images, True),
        "colour histogram HSV 8x3x3": lambda: ColourHistogramEmbedder(bins=(8, 3, 3)).embed(images),
        "colour histogram HSV 12x4x4": lambda: ColourHistogramEmbedder(bins=(12, 4, 4)).embed(images),
        "colour histogram HSV 16x4x8 (ColourHistogramEmbedder's default)": lambda: ColourHistogramEmbedder().embed(images),
        "colour histogram HSV 24x4x8": lambda: ColourHistogramEmbedder(bins=(24, 4, 8)).embed(images),
        "colour histogram HSV 16x4x8, no background removal": lambda: ColourHistogramEmbedder(background_tol=-1).embed(images),
        "taef2 latent, foreground mean (centred)": lambda: embed_taef2(images),
    }
    rows = []
    for name, fn in scorers.items():
        e = fn()
        rows.append({"similarity": name, **stats(e @ e.T, same, pair_idx)})
        print(f"{name}: AUC {rows[-1]['auc']:.3f}", flush=True)
    result_th = thresholds(df, images, pairs, index)
    result = {
        "thresholds": result_th,
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit(), "machine": machine(),
        "threads": os.environ.get("OMP_NUM_THREADS"), "images": len(df), "items": int(df["pid"].nunique()),
        "rows": rows, "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "fashion_identity.json", result)
    md = [
        "# Identity similarity on real fashion photos",
        "",
        f"`{result['command']}` at commit {result['commit']}; {len(df)} DeepFashion In-shop photos of "
        f"{result['items']} items (`../shared/data/deepfashion-samples`), every pair of two photos: "
        f"{rows[0]['n_same']} same-item, {rows[0]['n_different']} different-item; and the 95 pairs of `pairs.csv`.",
        "",
        "| similarity | same item | different items | AUC | p10 same (threshold) | different items passing | 95 pairs mean | 95 pairs passing |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        md.append(
            f"| {r['similarity']} | {r['same_item_mean']:.3f} | {r['different_item_mean']:.3f} | {r['auc']:.3f} | "
            f"{r['same_item_p10']:.3f} | {r['different_item_pass_rate_at_p10']:.0%} | {r['pairs95_mean']:.3f} | "
            f"{r['pairs95_pass_rate_at_p10']:.0%} |"
        )
    th = result["thresholds"]
    md += ["", "## Filter thresholds on the 95 fashion pairs (ground-truth keypoints)", "",
           "| score | pairs | p1 | p5 | p10 | median | p90 | p99 |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for key, label in (
        ("source_ssim_real", "SSIM(real target, source), 256x128 (near-copy check)"),
        ("sharpness_real", "sharpness ratio, real target vs source"),
        ("sharpness_frame", "sharpness ratio, source through the 256x128 letterbox and back"),
    ):
        q = th[key]
        md.append(f"| {label} | {q['n']} | {q['p1']:.3f} | {q['p5']:.3f} | {q['p10']:.3f} | {q['p50']:.3f} | {q['p90']:.3f} | {q['p99']:.3f} |")
    atomic_write_text(RESULTS / "fashion_identity.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
