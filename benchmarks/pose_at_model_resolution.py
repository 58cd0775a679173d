"""How often BlazePose finds a person in *real* crops degraded to a model's resolution.

Separates the two causes of "no person found in output" in ``augment``: the output resolution
itself, and the generator's quality. Each real CUHK03 crop is resized to ``W x H`` (bicubic) and
back to its own size -- exactly what ``augment`` does to a generated image -- and BlazePose full is
run on it. Prints a table and writes ``benchmarks/results/pose_at_model_resolution.json``.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pose_at_model_resolution.py [--images 120]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from posegen.data import load_dataset, read_image
from posegen.pose.backends import NoPersonFound, get_backend

REPO = Path(__file__).resolve().parents[1]
CUHK03_TRAIN = REPO.parent / "shared" / "data" / "cuhk03-detected" / "detected" / "train"
SIZES = {"32x64 (tiny recipe)": (32, 64), "64x128 (cuhk03 recipe)": (64, 128), "original": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=CUHK03_TRAIN)
    ap.add_argument("--images", type=int, default=120, help="first N images (sorted by path)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "pose_at_model_resolution.json")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"data not found: {args.data} (the ../shared folder beside the repository)")
    paths = load_dataset(args.data)["path"].head(args.images).tolist()
    found = {name: 0 for name in SIZES}
    with get_backend("blazepose") as be:
        for rel in paths:
            image = read_image(args.data / rel)
            h, w = image.shape[:2]
            for name, size in SIZES.items():
                im = image
                if size is not None:
                    im = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC).resize((w, h), Image.BICUBIC))
                try:
                    be.estimate(im)
                    found[name] += 1
                except NoPersonFound:
                    pass
    results = {"command": " ".join(["python", *sys.argv]), "images": len(paths), "person_found": found}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(title=f"BlazePose on {len(paths)} real crops resized to W x H and back")
    table.add_column("resolution (W x H)")
    table.add_column("person found", justify="right")
    for name, n in found.items():
        table.add_row(name, f"{n}/{len(paths)}")
    Console().print(table)


if __name__ == "__main__":
    main()
