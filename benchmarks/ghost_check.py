"""Two warp-predicted filter checks on the README main job: what they reject, measured and shown.

``--check foreign`` (default): the ghost-limb check, ``filter.max_foreign_fraction``
(:func:`posegen.filter.artifacts.foreign_fraction`). ``--check invented``: the invented-background
check, ``filter.max_invented_fraction`` (:func:`posegen.filter.artifacts.invented_fraction`). With a
check off, ``augment`` does not prefer targets by it either (its target choice predicts both; the
results files of the foreign check predate that preference, commit 954db09).

Runs (or resumes) the README main job, :func:`posegen.augment.augment` of the first ``--limit``
CUHK03 *train* images with the ``default`` recipe, the OSNet identity checks and the shipped model,
but with the chosen check switched off, so that every output carries its score and a decision
made by the other checks only. Then, over the outputs those checks keep:

- the share of the generated images still kept at each threshold of the check;
- two strips (source | output pairs) written to ``benchmarks/results/``: the ``--strip`` outputs
  with the highest score (``<stem>-top.jpg``) and ``--strip`` outputs at the lowest
  (``<stem>-low.jpg``), for looking at what the check removes and what it leaves;
- ``invented`` only: how well the keypoint-only prediction ``augment`` chooses targets with
  (:func:`posegen.repose.latent.predicted_repair_share`) agrees with the exact score, over every
  generated image.

Prints a table and writes ``benchmarks/results/<stem>.{json,md}`` (stem ``ghost_check`` or
``invented_check``). Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ghost_check.py [--check foreign|invented] [--limit 120] [--out DIR] [--model DIR]
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
#: check -> (recipe filter field, manifest score column, thresholds (None = off), results stem, title)
CHECKS = {
    "foreign": ("max_foreign_fraction", "foreign_fraction", (0.02, 0.03, 0.04, 0.05, 0.06, None), "ghost_check", "The ghost-limb check"),
    "invented": ("max_invented_fraction", "invented_fraction", (0.15, 0.18, 0.2, 0.22, 0.25, 0.3, None), "invented_check",
                 "The invented-background check"),
}  # fmt: skip
TILE = (64, 160)  # (w, h) of each image in the strips


def strip(rows, out_root: Path, path: Path, column: str) -> None:
    """Save ``source | output`` pairs of ``rows`` (manifest rows) side by side, 10 pairs a row,
    each labelled with its score ``column``."""
    w, h = TILE
    tiles = []
    for _, r in rows.iterrows():
        t = Image.new("RGB", (2 * w + 2, h + 12), "white")
        t.paste(Image.open(TRAIN / r["source"]).convert("RGB").resize(TILE), (0, 0))
        t.paste(Image.open(out_root / r["path"]).convert("RGB").resize(TILE), (w + 2, 0))
        ImageDraw.Draw(t).text((2, h), f"{r[column]:.3f}", fill=(0, 0, 0))
        tiles.append(t)
    cols = 10
    sheet = Image.new("RGB", (cols * (2 * w + 4), -(-len(tiles) // cols) * (h + 14)), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (2 * w + 4), (i // cols) * (h + 14)))
    sheet.save(path, quality=85)


def prediction_agreement(out: Path, syn, recipe, threshold: float) -> dict:
    """The keypoint-only prediction of the invented share against the exact score of every
    generated image in ``syn`` (manifest rows of OUT): median absolute difference, and how many the
    prediction and the exact score each put above ``threshold``."""
    import torch

    from posegen.latent import letterbox_params, to_frame_keypoints
    from posegen.pose.formats import read_poses
    from posegen.repose.latent import FRAME_HW, predicted_repair_share
    from posegen.repose.warp import align_pose

    pose_of = read_poses(out / ".posegen" / "poses.parquet").set_index("path")
    ms = recipe.pose.min_score

    def kp(path):
        return np.asarray(pose_of.loc[path, "keypoints"], np.float32).reshape(17, 3)

    pred, exact = [], []
    for _, r in syn[syn["invented_fraction"].notna()].iterrows():
        sk, tk = kp(r["source"]), kp(r["target_pose_source"])
        if recipe.augment.align_targets:  # the target pose the generator used
            tk = align_pose(tk[None], sk[None], min_score=ms)[0]
        box = letterbox_params((int(pose_of.loc[r["source"], "width"]), int(pose_of.loc[r["source"], "height"])), FRAME_HW)
        inside = torch.from_numpy(np.ascontiguousarray(box.inside_mask()))[None, None]
        v = predicted_repair_share(torch.from_numpy(to_frame_keypoints(sk, box))[None],
                                   torch.from_numpy(to_frame_keypoints(tk, box))[None], inside, ms)  # fmt: skip
        pred.append(float(v[0]))
        exact.append(float(r["invented_fraction"]))
    pred, exact = np.array(pred), np.array(exact)
    return {
        "images": len(pred), "median_abs_difference": float(np.median(np.abs(pred - exact))) if len(pred) else float("nan"),
        "predicted_above": int((pred > threshold).sum()), "exact_above": int((exact > threshold).sum()),
        "both_above": int(((pred > threshold) & (exact > threshold)).sum()), "threshold": threshold,
    }  # fmt: skip


def main() -> None:
    from posegen._io import atomic_write_json, atomic_write_text
    from posegen.augment import augment
    from posegen.pose.backends import get_backend
    from posegen.recipe import load_recipe

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", choices=sorted(CHECKS), default="foreign")
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--out", type=Path, default=None, help="augment OUT (default runs/ghost-check or runs/invented-check)")
    ap.add_argument("--strip", type=int, default=20)
    ap.add_argument("--model", type=Path, default=None, help="a model folder or training run (default: the shipped model)")
    args = ap.parse_args()
    field, column, thresholds, stem, title = CHECKS[args.check]
    out = args.out or REPO / "runs" / ("ghost-check" if args.check == "foreign" else "invented-check")
    if not TRAIN.is_dir():
        sys.exit(f"data not found: {TRAIN} (the ../shared folder beside the repository)")
    base = load_recipe("default")
    shipped = getattr(base.filter, field)
    recipe = base.model_copy(update={"filter": base.filter.model_copy(update={field: None})})
    t0 = time.perf_counter()
    with get_backend() as be:
        m = augment(TRAIN, out, recipe=recipe, backend=be, limit=args.limit, reid_weights=OSNET, resume=out.exists(),
                    model=args.model)  # fmt: skip
    seconds = time.perf_counter() - t0
    syn = m[m["synthetic"].astype(bool) & (m["k"] > 0)]
    kept = syn[syn["kept"].astype(bool)].sort_values(column, ascending=False)
    n = len(syn)
    rows = []
    for t in thresholds:
        k = len(kept) if t is None else int((kept[column] <= t).sum())
        rows.append({field: t, "kept": k, "share_of_generated": k / n if n else float("nan")})
    strip(kept.head(args.strip), out, RESULTS / f"{stem}-top.jpg", column)
    strip(kept.tail(args.strip).iloc[::-1], out, RESULTS / f"{stem}-low.jpg", column)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    record = {
        "command": command, "commit": commit(), "machine": machine(), "seconds": seconds, "generated": n,
        "kept_without_check": len(kept), "thresholds": rows,
        f"{column}_kept_quantiles": {str(q): float(np.quantile(kept[column], q)) for q in (0.5, 0.75, 0.9, 0.95)},
        "top": kept.head(args.strip)[["path", "source", column]].to_dict("records"),
    }  # fmt: skip
    md = [
        f"# {title} on the README main job",
        "",
        f"`{command}` at commit {record['commit']} ({record['machine']}; {seconds / 60:.1f} min).",
        "",
        f"{n} generated from the first {args.limit} CUHK03 train images; {len(kept)} kept by the other checks of the "
        f"`default` recipe (this check off). Kept at each `filter.{field}` (the recipe ships {shipped}):",
        "",
        f"| {field} | kept | share of generated |",
        "| --- | ---: | ---: |",
        *[f"| {'off' if r[field] is None else r[field]} | {r['kept']} | {r['share_of_generated']:.1%} |" for r in rows],
        "",
        f"Strips (source | output, the score below each pair): `{stem}-top.jpg` (the {args.strip} kept outputs "
        f"with the highest `{column}`), `{stem}-low.jpg` (the {args.strip} with the lowest).",
    ]  # fmt: skip
    if args.check == "invented" and shipped is not None:
        a = prediction_agreement(out, syn, recipe, shipped)
        record["prediction"] = a
        md += [
            "",
            f"Keypoint-only prediction (`predicted_repair_share`) against the exact score over {a['images']} generated "
            f"images: median absolute difference {a['median_abs_difference']:.3f}; above {a['threshold']}: predicted "
            f"{a['predicted_above']}, exact {a['exact_above']}, both {a['both_above']}.",
        ]
    atomic_write_json(RESULTS / f"{stem}.json", record)
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
