"""Plain backdrop or street scene? The background texture of real photos, per dataset.

:func:`posegen.repose.latent.plain_backdrop` decides per source whether the warp's removed region is
left to the interpolated fill (a plain studio backdrop, where the repair model - trained on CUHK03
street crops - paints texture and a halo) or repaired by the model (a textured background). This
measures :func:`~posegen.repose.latent.background_texture` (mean absolute grey-level difference of
neighbouring background pixels, outside the dilated person mask and the letterbox padding, in the
256x128 frame, per source pixel: times the letterbox's enlargement where it enlarges) on:

- the 179 DeepFashion In-shop sample photos (ground-truth keypoints, ``annotations.csv``);
- the Market-1501 sample crops (ground-truth keypoints);
- CUHK03 ``detected/val`` and ``detected/train`` (keypoints of posegen's default pose backend).

Prints percentiles and the share below :data:`~posegen.repose.latent.PLAIN_BACKGROUND`, and writes
``benchmarks/results/background_texture.{json,md}``. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/background_texture.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from _common import REPO, RESULTS, SHARED, commit, machine

from posegen._io import atomic_write_json, atomic_write_text
from posegen.data.images import read_image
from posegen.latent import letterbox_params, to_frame_keypoints
from posegen.pose.formats import keypoints_array, read_poses
from posegen.repose.latent import FRAME_HW, PLAIN_BACKGROUND, plain_backdrop

DATA = SHARED / "data"
CACHE = REPO / "runs" / "bench-cache"
PERCENTILES = (5, 25, 50, 75, 95)


def textures(root: Path, paths, keypoints: np.ndarray, batch: int = 64) -> np.ndarray:
    """``float [N]`` background texture of each image (keypoints ``[N, 17, 3]`` in its pixels)."""
    out = []
    for i in range(0, len(paths), batch):
        frames, kps, insides, ups = [], [], [], []
        for p, kp in zip(paths[i : i + batch], keypoints[i : i + batch]):
            im = read_image(root / p)
            box = letterbox_params((im.shape[1], im.shape[0]), FRAME_HW)
            frames.append(box.image_to_frame(im))
            kps.append(to_frame_keypoints(kp.astype(np.float32), box))
            insides.append(box.inside_mask())
            ups.append(box.scale[0])
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
        tex, _ = plain_backdrop(x, torch.from_numpy(np.stack(kps)), torch.from_numpy(np.stack(insides))[:, None], upscale=ups)
        out.append(tex.numpy())
    return np.concatenate(out)


def annotated(folder: Path) -> tuple[Path, list[str], np.ndarray]:
    poses = read_poses(folder / "annotations.csv")
    poses = poses[[(folder / "images" / p).is_file() for p in poses["path"]]].reset_index(drop=True)
    return folder / "images", list(poses["path"]), keypoints_array(poses)


def estimated(folder: Path) -> tuple[Path, list[str], np.ndarray]:
    """Poses of posegen's default backend (cached under ``runs/bench-cache`` per backend)."""
    from posegen.data import load_dataset
    from posegen.pose.backends import get_backend
    from posegen.pose.extract import extract_poses

    manifest = load_dataset(folder)
    CACHE.mkdir(parents=True, exist_ok=True)
    with get_backend() as be:
        poses = extract_poses(manifest, folder, be, out=CACHE / f"cuhk03-{folder.name}-poses-{be.name}.parquet")
    return folder, list(poses["path"]), keypoints_array(poses)


def main() -> None:
    torch.set_num_threads(1)
    sets = {
        "DeepFashion In-shop samples (studio)": lambda: annotated(DATA / "deepfashion-samples"),
        "Market-1501 samples (street)": lambda: annotated(DATA / "market1501-samples"),
        "CUHK03 detected/val (street)": lambda: estimated(DATA / "cuhk03-detected" / "detected" / "val"),
        "CUHK03 detected/train (street)": lambda: estimated(DATA / "cuhk03-detected" / "detected" / "train"),
    }
    if not (DATA / "deepfashion-samples").is_dir():
        sys.exit(f"data not found: {DATA} (the ../shared folder beside the repository)")
    t0 = time.perf_counter()
    rows = []
    for name, load in sets.items():
        root, paths, kp = load()
        tex = textures(root, paths, kp)
        pct = np.nanpercentile(tex, PERCENTILES)
        rows.append({"set": name, "images": len(tex), "unknown": int(np.isnan(tex).sum()),
                     **{f"p{q}": float(v) for q, v in zip(PERCENTILES, pct)},
                     "plain_share": float((tex < PLAIN_BACKGROUND).mean())})  # fmt: skip
    table = Table(title=f"background texture (plain below {PLAIN_BACKGROUND})")
    for c in ["set", "images", "unknown", *[f"p{q}" for q in PERCENTILES], "plain"]:
        table.add_column(c, justify="left" if c == "set" else "right")
    for r in rows:
        table.add_row(r["set"], str(r["images"]), str(r["unknown"]), *[f"{r[f'p{q}']:.4f}" for q in PERCENTILES], f"{100 * r['plain_share']:.1f}%")
    Console(width=140).print(table)
    wall = time.perf_counter() - t0
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/background_texture.py"
    md = [
        "# Background texture: plain backdrop or street scene",
        "",
        f"`{cmd}` at commit {commit()} ({machine()}; {wall / 60:.1f} min).",
        "",
        "Mean absolute grey-level difference of neighbouring background pixels (grey in 0..1; outside the person "
        "mask dilated by 4 px and the letterbox padding; 256x128 frame; times the enlargement of photos smaller than the frame), "
        "`posegen.repose.latent.plain_backdrop`. "
        f"Below {PLAIN_BACKGROUND} (`PLAIN_BACKGROUND`) the warp's removed region is left to the interpolated "
        "backdrop instead of the repair model.",
        "",
        "Unknown: less than 0.5 % of the frame is background (a tight crop); never plain. Percentiles over the known ones.",
        "",
        "| set | images | unknown | " + " | ".join(f"p{q}" for q in PERCENTILES) + " | plain |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in PERCENTILES) + " | ---: |",
    ]
    md += [f"| {r['set']} | {r['images']} | {r['unknown']} | " + " | ".join(f"{r[f'p{q}']:.4f}" for q in PERCENTILES)
           + f" | {100 * r['plain_share']:.1f}% |" for r in rows]  # fmt: skip
    atomic_write_text(RESULTS / "background_texture.md", "\n".join(md) + "\n")
    atomic_write_json(RESULTS / "background_texture.json", {"command": cmd, "commit": commit(), "threshold": PLAIN_BACKGROUND, "rows": rows})
    print(f"wrote {RESULTS / 'background_texture.md'}")


if __name__ == "__main__":
    main()
