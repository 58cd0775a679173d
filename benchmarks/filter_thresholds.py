"""Where the filter's default thresholds come from: distributions on real CUHK03 and Market data.

Measures, with the library's own metrics (:mod:`posegen.metrics`):

1. **identity** (``filter.min_identity``, ``filter.min_identity_others``): OSNet x0.25 MSMT17
   cosine similarity of a real image degraded to a model resolution (down to ``64x32`` / ``128x64``
   and back up, standing in for a generated image) against the real images of the same pid (another
   image; the mean over the pid's other images) and of other pids, on ``--pids`` random CUHK03
   train identities. The recipe thresholds are the 10th percentiles of the same-pid rows.
2. **near-copy** (``filter.max_source_ssim``): SSIM at the model resolution between an image and
   (a) itself after the output path (resize up, JPEG quality 95, resize down), (b) other real images
   of the same pid, same view and other view, (c) a different pid.
3. **pose difference** (``filter.copy_pose_oks``): OKS between random pairs of Market-1501 annotated
   poses: how often two unrelated poses look "the same".

Prints the percentiles and writes ``benchmarks/results/filter_thresholds.{json,md}``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/filter_thresholds.py [--pids 60] [--images 150]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import repose_quality as rq  # noqa: E402

from posegen._io import atomic_write_json, atomic_write_text  # noqa: E402
from posegen.data.images import read_image  # noqa: E402
from posegen.metrics import ReidEmbedder, oks, ssim  # noqa: E402
from posegen.pose.formats import keypoints_array, read_poses  # noqa: E402
from posegen.repose.render import resize_image  # noqa: E402

TRAIN = rq.SHARED / "data" / "cuhk03-detected" / "detected" / "train"
MARKET = rq.SHARED / "data" / "market1501-keypoints" / "market-annotation-train.csv"
RESOLUTIONS = {"64x32": (64, 32), "128x64": (128, 64)}
PCTS = (1, 5, 10, 25, 50, 75, 90, 95, 99)


def _pct(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    return {f"p{p}": float(np.percentile(a, p)) for p in PCTS} | {"n": int(a.size)}


def _degrade(im: np.ndarray, hw) -> np.ndarray:
    return resize_image(resize_image(im, hw), im.shape[:2])


def identity(pids: int, rng) -> dict:
    """OSNet cosine distributions (see the module docstring, part 1)."""
    emb = ReidEmbedder(rq.OSNET)
    names = sorted({p.name[:4] for p in TRAIN.glob("*.jpg")})
    chosen = set(rng.choice(names, pids, replace=False))
    files = sorted(f for f in TRAIN.glob("*.jpg") if f.name[:4] in chosen)
    labels = np.array([f.name[:4] for f in files])
    imgs = [read_image(f) for f in files]
    real = emb.embed(imgs)
    same = labels[:, None] == labels[None]
    eye = np.eye(len(files), dtype=bool)
    out = {}
    for name, hw in RESOLUTIONS.items():
        c = emb.embed([_degrade(im, hw) for im in imgs]) @ real.T
        others = np.array([c[i, same[i] & ~eye[i]].mean() for i in range(len(files)) if (same[i] & ~eye[i]).any()])
        out[name] = {
            "same pid, another image": _pct(c[same & ~eye]),
            "different pid": _pct(c[~same]),
            "mean to the pid's other images": _pct(others),
        }
    return {"images": len(files), "pids": pids, "rows": out}


def near_copy(n_images: int, rng) -> dict:
    """SSIM distributions (see the module docstring, part 2)."""
    files = sorted(TRAIN.glob("*.jpg"))
    out = {}
    for name, hw in RESOLUTIONS.items():
        rows = {"copy (output path round trip)": [], "same pid, same view": [], "same pid, other view": [], "different pid": []}
        for f in rng.choice(files, n_images, replace=False):
            pid, k = f.stem.split("_")
            k = int(k)
            a = read_image(f)
            small = resize_image(a, hw)
            buf = io.BytesIO()
            Image.fromarray(resize_image(small, a.shape[:2])).save(buf, format="JPEG", quality=95)
            rows["copy (output path round trip)"].append(ssim(resize_image(np.asarray(Image.open(buf).convert("RGB")), hw), small)[0])
            for key, js in (("same pid, same view", range(5) if k < 5 else range(5, 10)),
                            ("same pid, other view", range(5, 10) if k < 5 else range(5))):  # fmt: skip
                for j in js:
                    g = TRAIN / f"{pid}_{j:02d}.jpg"
                    if j != k and g.exists():
                        rows[key].append(ssim(resize_image(read_image(g), hw), small)[0])
            g = files[rng.integers(len(files))]
            if g.stem[:4] != pid:
                rows["different pid"].append(ssim(resize_image(read_image(g), hw), small)[0])
        out[name] = {k: _pct(v) for k, v in rows.items()}
    return out


def pose_difference(pairs: int, rng) -> dict:
    """OKS of random Market-1501 pose pairs (see the module docstring, part 3)."""
    kp = keypoints_array(read_poses(MARKET))
    kp = kp[(kp[:, :, 2] >= 0.5).sum(1) >= 8]
    idx = rng.integers(len(kp), size=(pairs, 2))
    o = np.array([oks(kp[i], kp[j]) for i, j in idx])
    return {"oks": _pct(o), "share_at_least": {str(t): float(np.mean(o >= t)) for t in (0.5, 0.6, 0.7, 0.8, 0.9)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pids", type=int, default=60)
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--pose-pairs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not TRAIN.is_dir():
        sys.exit(f"data not found: {TRAIN} (the ../shared folder beside the repository)")
    res = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": rq.commit(),
        "identity": identity(args.pids, np.random.default_rng(args.seed)),
        "near_copy": near_copy(args.images, np.random.default_rng(args.seed)),
        "pose_difference": pose_difference(args.pose_pairs, np.random.default_rng(args.seed)),
    }
    lines = [f"# Filter threshold measurements\n\n`{res['command']}` at commit {res['commit']}\n"]
    head = "| measure | " + " | ".join(f"p{p}" for p in PCTS) + " | n |\n|---|" + "---:|" * (len(PCTS) + 1)
    for section, per_res in (("identity: OSNet cosine", res["identity"]["rows"]), ("near-copy: SSIM at the model resolution", res["near_copy"])):
        for r, rows in per_res.items():
            lines += [f"\n## {section}, {r}\n", head]
            for k, d in rows.items():
                lines.append(f"| {k} | " + " | ".join(f"{d[f'p{p}']:.3f}" for p in PCTS) + f" | {d['n']} |")
    d = res["pose_difference"]["oks"]
    lines += ["\n## pose difference: OKS of random Market-1501 pose pairs\n", head,
              "| OKS | " + " | ".join(f"{d[f'p{p}']:.3f}" for p in PCTS) + f" | {d['n']} |",
              "\nshare of pairs with OKS >= t: " + ", ".join(f"{t}: {v:.3f}" for t, v in res["pose_difference"]["share_at_least"].items())]  # fmt: skip
    md = "\n".join(lines) + "\n"
    print(md)
    atomic_write_json(rq.RESULTS / "filter_thresholds.json", res)
    atomic_write_text(rq.RESULTS / "filter_thresholds.md", md)


if __name__ == "__main__":
    main()
