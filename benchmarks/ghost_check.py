"""The ghost-limb check (``filter.max_foreign_fraction``): what it rejects, measured and shown.

Runs (or resumes) the README main job, :func:`posegen.augment.augment` of the first ``--limit``
CUHK03 *train* images with the ``default`` recipe, the OSNet identity checks and the shipped model,
but with ``filter.max_foreign_fraction`` switched off, so that every output carries its
``foreign_fraction`` (:func:`posegen.filter.artifacts.foreign_fraction`) and a decision made by the
other checks only. Then, over the outputs those checks keep:

- the share of the generated images still kept at each threshold of the ghost check;
- two strips (source | output pairs) written to ``benchmarks/results/``: the ``--strip`` outputs
  with the highest foreign fraction (``ghost_check-top.jpg``) and ``--strip`` outputs at the lowest
  (``ghost_check-low.jpg``), for looking at what the check removes and what it leaves.

Prints a table and writes ``benchmarks/results/ghost_check.{json,md}``. Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ghost_check.py [--limit 120] [--out runs/ghost-check]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from _common import REPO, RESULTS, SHARED, commit, machine

TRAIN = SHARED / "data" / "cuhk03-detected" / "detected" / "train"
OSNET = SHARED / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx"
THRESHOLDS = (0.02, 0.03, 0.04, 0.05, 0.06, None)
TILE = (64, 160)  # (w, h) of each image in the strips


def strip(rows, out_root: Path, path: Path) -> None:
    """Save ``source | output`` pairs of ``rows`` (manifest rows) side by side, 10 pairs a row,
    each labelled with its foreign fraction."""
    w, h = TILE
    tiles = []
    for _, r in rows.iterrows():
        t = Image.new("RGB", (2 * w + 2, h + 12), "white")
        t.paste(Image.open(TRAIN / r["source"]).convert("RGB").resize(TILE), (0, 0))
        t.paste(Image.open(out_root / r["path"]).convert("RGB").resize(TILE), (w + 2, 0))
        ImageDraw.Draw(t).text((2, h), f"{r['foreign_fraction']:.3f}", fill=(0, 0, 0))
        tiles.append(t)
    cols = 10
    sheet = Image.new("RGB", (cols * (2 * w + 4), -(-len(tiles) // cols) * (h + 14)), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (2 * w + 4), (i // cols) * (h + 14)))
    sheet.save(path, quality=85)


def main() -> None:
    from posegen._io import atomic_write_json, atomic_write_text
    from posegen.augment import augment
    from posegen.pose.backends import get_backend
    from posegen.recipe import load_recipe

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "ghost-check")
    ap.add_argument("--strip", type=int, default=20)
    args = ap.parse_args()
    if not TRAIN.is_dir():
        sys.exit(f"data not found: {TRAIN} (the ../shared folder beside the repository)")
    base = load_recipe("default")
    recipe = base.model_copy(update={"filter": base.filter.model_copy(update={"max_foreign_fraction": None})})
    t0 = time.perf_counter()
    with get_backend() as be:
        m = augment(TRAIN, args.out, recipe=recipe, backend=be, limit=args.limit, reid_weights=OSNET, resume=args.out.exists())
    seconds = time.perf_counter() - t0
    syn = m[m["synthetic"].astype(bool) & (m["k"] > 0)]
    kept = syn[syn["kept"].astype(bool)].sort_values("foreign_fraction", ascending=False)
    n = len(syn)
    rows = []
    for t in THRESHOLDS:
        k = len(kept) if t is None else int((kept["foreign_fraction"] <= t).sum())
        rows.append({"max_foreign_fraction": t, "kept": k, "share_of_generated": k / n if n else float("nan")})
    strip(kept.head(args.strip), args.out, RESULTS / "ghost_check-top.jpg")
    strip(kept.tail(args.strip).iloc[::-1], args.out, RESULTS / "ghost_check-low.jpg")
    command = " ".join([Path(sys.executable).name, *sys.argv])
    record = {
        "command": command, "commit": commit(), "machine": machine(), "seconds": seconds, "generated": n,
        "kept_without_check": len(kept), "thresholds": rows,
        "foreign_fraction_kept_quantiles": {str(q): float(np.quantile(kept["foreign_fraction"], q)) for q in (0.5, 0.75, 0.9, 0.95)},
        "top": kept.head(args.strip)[["path", "source", "foreign_fraction"]].to_dict("records"),
    }  # fmt: skip
    md = [
        "# The ghost-limb check on the README main job",
        "",
        f"`{command}` at commit {record['commit']} ({record['machine']}; {seconds / 60:.1f} min).",
        "",
        f"{n} generated from the first {args.limit} CUHK03 train images; {len(kept)} kept by the other checks of the "
        "`default` recipe (the ghost check off). Kept at each `filter.max_foreign_fraction`:",
        "",
        "| max_foreign_fraction | kept | share of generated |",
        "| --- | ---: | ---: |",
        *[f"| {'off' if r['max_foreign_fraction'] is None else r['max_foreign_fraction']} | {r['kept']} | {r['share_of_generated']:.1%} |" for r in rows],
        "",
        f"Strips (source | output, foreign fraction below each pair): `ghost_check-top.jpg` (the {args.strip} kept outputs "
        f"with the highest foreign fraction), `ghost_check-low.jpg` (the {args.strip} with the lowest).",
    ]  # fmt: skip
    atomic_write_json(RESULTS / "ghost_check.json", record)
    atomic_write_text(RESULTS / "ghost_check.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
