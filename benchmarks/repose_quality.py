"""Re-posing quality benchmark: CUHK03 val identities (never seen in training), cross-view pairs.

Every model change is judged by this table. Protocol:

- **Data**: ``../shared/data/cuhk03-detected/detected/val`` (100 identities that are not in
  ``train``). Poses are extracted once with ``--backend`` (default: posegen's default backend,
  ``auto`` = MoveNet when its weights are found) and cached per backend under ``runs/bench-cache``.
- **Pairs**: a fixed, seeded list of same-pid *cross-view* pairs (source in view A, target in view
  B and vice versa), both with a usable pose; written once to ``benchmarks/quality_pairs.csv`` and
  read from there afterwards, so every model is measured on the same pairs.
- **Generation**: the model re-poses each source to its target's pose at 10 and 20 sampler steps
  (``--steps``), one seeded generator per pair.
- **Metrics** (:mod:`posegen.metrics`), output vs the real target image resized to the model's
  resolution: SSIM and PSNR (torchmetrics). Scored as ``augment`` scores what it writes (the output
  resized to the source's size): OKS and PCKh\\@0.5 between the target pose and the pose
  re-estimated on the output (the same backend; "no person" counts as OKS 0 and PCK 0), identity cosine
  similarity of the output to the source (OSNet x0.25 MSMT17 ONNX from ``../shared/weights/osnet``),
  and the kept-rate under the recipe's filter (:func:`posegen.filter.filter_batch`).
- **Baseline**: "output = source image" (the source resized to the model's resolution), scored the
  same way, so that the numbers mean something.

Latent-model results also split every row by the change of facing between source and target
(:func:`by_facing`: opposite, side, same). Prints a table and writes
``benchmarks/results/repose_quality[-TAG].{json,md}`` with the command and
commit. Usage::

    .venv/bin/python benchmarks/repose_quality.py MODEL [--pairs 200] [--steps 10 20] [--tag NAME]

``MODEL`` is a ``posegen train`` run folder or its ``model/`` pipeline folder.

**Latent models** (posegen's default model, :class:`posegen.repose.LatentReposePipeline`; ``MODEL``
may be ``default``) are measured on TWO pair sets: the cross-view pairs above and a committed list
of **same-view** pairs (``benchmarks/quality_pairs_same_view.csv``: per pid one pair inside view A
and one inside view B, another frame of the same walk — what ``augment`` asks for), next to a
reference, "output = the real target photo" (its identity is how close a real photo of the person
in the target pose is to the source: an output that honours a change of view should not be expected
to score above it), the baselines "output = source", "limb warp" (the original warp, free part transforms, no background),
"limb warp over the source" (part scale <= 1.25, composited over the source image), "constrained
warp over the source" (bounded transforms, view-robust torso and upright head) and "constrained warp
+ filled background" (the model's starting point), and the model at several SDEdit strengths
(``--strengths``). Everything is generated in the 256x128 letterbox frame with the target pose where
the real target image has it (``align=False``) and written at the source's size; SSIM / PSNR compare
output and real target both resized to 256x128; OKS, PCK, identity and the kept-rate are scored by
:func:`posegen.filter.filter_batch` with the ``default`` recipe's filter on the output at the source's
size against the target pose the generator used. "invented texture" (:func:`invented_texture`) is
the median, over pairs where the warp invents >= 2 % of the frame, of the output's grey-level
gradient in that region relative to the real target's there: about 1 for a fill as textured as the
real background, near 0 for the smooth blob of an interpolated fill. Below each table: the share of
pairs that pass the filter's two pose-only checks (invented background, copied body parts: predicted
from the source and the two poses, so the same for every output of a pair; a pair that fails them is
rejected whatever the output, so this share is the kept-rate's ceiling on a fixed pair list) and the
kept-rate among them.

**Fashion pairs** (``--sets fashion``): the 95 DeepFashion In-shop pairs of
``../shared/data/deepfashion-samples`` (``pairs.csv``: same item, another view; 176x256 photos, w x h),
with the ground-truth keypoints of ``annotations.csv`` (OpenPose-18, converted to COCO-17) as source
and target poses, the same baselines and model rows; SSIM / PSNR at the photos' own 256x176 (h x w),
as the pose-transfer papers report them. Written to ``repose_quality-fashion.{json,md}``::

    .venv/bin/python benchmarks/repose_quality.py default --sets fashion --pairs 95 --strengths 0.4
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
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from posegen._io import atomic_write_json, atomic_write_text, stable_seed
from posegen.data import load_dataset
from posegen.data.deepfashion import flat_to_tree
from posegen.data.images import read_image
from posegen.filter.scores import pose_only_reason
from posegen.pose.backends import DEFAULT_BACKEND, get_backend
from posegen.pose.extract import extract_poses, usable_poses
from posegen.pose.formats import keypoints_array
from posegen.pose.keypoints import scale_keypoints
from posegen.recipe import load_recipe
from posegen.repose import load_pipeline
from posegen.repose.render import resize_image
from _common import REPO, RESULTS, SHARED, commit

CUHK03_VAL = SHARED / "data" / "cuhk03-detected" / "detected" / "val"
OSNET = SHARED / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx"
PAIRS_FILE = REPO / "benchmarks" / "quality_pairs.csv"
CACHE = REPO / "runs" / "bench-cache"


def val_poses(backend) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The CUHK03 val manifest and its poses by ``backend`` (cached per backend, resumable)."""
    manifest = load_dataset(CUHK03_VAL)
    CACHE.mkdir(parents=True, exist_ok=True)
    poses = extract_poses(manifest, CUHK03_VAL, backend, out=CACHE / f"cuhk03-val-poses-{backend.name}.parquet")
    return manifest, poses


def make_pair_list(manifest: pd.DataFrame, poses: pd.DataFrame, *, per_pid: int = 2, seed: int = 0) -> pd.DataFrame:
    """Fixed cross-view pairs: per pid, ``per_pid`` pairs alternating A->B and B->A.

    Only images with a usable pose (:func:`usable_poses`, the tiny recipe's thresholds) take part.
    Returns a DataFrame ``source, target, pid`` (paths relative to the val root), sorted by pid.
    """
    rec = load_recipe("tiny")
    ok = set(poses.loc[usable_poses(poses, min_score=rec.pose.min_score, min_keypoints=rec.pose.min_keypoints), "path"])
    m = manifest[manifest["path"].isin(ok)]
    rows = []
    for pid, g in m.groupby("pid", sort=True):
        view_a = sorted(p for p in g["path"] if int(Path(p).stem.split("_")[1]) < 5)
        view_b = sorted(p for p in g["path"] if int(Path(p).stem.split("_")[1]) >= 5)
        if not view_a or not view_b:
            continue
        rng = np.random.default_rng(stable_seed(seed, "quality-pairs", int(pid)))
        for j in range(per_pid):
            a, b = view_a[rng.integers(len(view_a))], view_b[rng.integers(len(view_b))]
            src, tgt = (a, b) if j % 2 == 0 else (b, a)
            rows.append({"source": src, "target": tgt, "pid": int(pid)})
    return pd.DataFrame(rows).drop_duplicates(["source", "target"]).reset_index(drop=True)


def load_pairs(manifest: pd.DataFrame, poses: pd.DataFrame) -> pd.DataFrame:
    """The committed pair list, created on first use."""
    if PAIRS_FILE.is_file():
        return pd.read_csv(PAIRS_FILE)
    pairs = make_pair_list(manifest, poses)
    atomic_write_text(PAIRS_FILE, pairs.to_csv(index=False))
    return pairs


def _load_pair_data(obj, backend, embedder, pairs: pd.DataFrame, poses: pd.DataFrame, recipe, root: Path = CUHK03_VAL) -> None:
    """Set what both scorers share on ``obj``: the pairs' images (``uint8 [H, W, 3]``, read from
    ``root``), keypoints (``float32 [N, 17, 3]``, pixels of each image), sizes (``[N, 2]`` width,
    height) and the sources' re-ID embeddings."""
    obj.backend, obj.embedder, obj.recipe, obj.pairs = backend, embedder, recipe, pairs
    kp = dict(zip(poses["path"], keypoints_array(poses)))
    size = dict(zip(poses["path"], zip(poses["width"], poses["height"])))
    obj.src_images = [read_image(root / p) for p in pairs["source"]]
    obj.tgt_images = [read_image(root / p) for p in pairs["target"]]
    obj.src_kp = np.stack([kp[p] for p in pairs["source"]]).astype(np.float32)
    obj.tgt_kp = np.stack([kp[p] for p in pairs["target"]]).astype(np.float32)
    obj.src_size = np.array([size[p] for p in pairs["source"]], dtype=np.float64)
    obj.tgt_size = np.array([size[p] for p in pairs["target"]], dtype=np.float64)
    obj.src_emb = embedder.embed(obj.src_images)


class Scorer:
    """Scores outputs at the model resolution against pairs (see the module docstring)."""

    def __init__(self, backend, embedder, pairs: pd.DataFrame, poses: pd.DataFrame, resolution, recipe):
        _load_pair_data(self, backend, embedder, pairs, poses, recipe)
        self.h, self.w = resolution
        # target pose and real target image in the model frame
        self.tgt_kp_model = np.stack(
            [scale_keypoints(k, tuple(s), (self.w, self.h)) for k, s in zip(self.tgt_kp, self.tgt_size)]
        )
        self.tgt_model = np.stack([resize_image(im, (self.h, self.w)) for im in self.tgt_images])
        self.src_model = np.stack([resize_image(im, (self.h, self.w)) for im in self.src_images])

    def score(self, outputs: np.ndarray) -> pd.DataFrame:
        """Per-pair metrics of ``outputs`` (``uint8 [N, h, w, 3]``, model resolution).

        SSIM / PSNR compare with the real target at the model's resolution. Everything else is
        scored exactly as ``augment`` scores what it writes: the output resized to the source
        image's size, the target pose scaled to it, :func:`posegen.filter.filter_batch` with the
        recipe's thresholds (its "other images of the pid" identity check is not applied here).
        """
        from posegen.filter import filter_batch
        from posegen.metrics import psnr, ssim

        up = [resize_image(o, im.shape[:2]) for o, im in zip(outputs, self.src_images)]
        tgt_kp_src = np.stack(
            [scale_keypoints(k, tuple(ts), tuple(ss)) for k, ts, ss in zip(self.tgt_kp, self.tgt_size, self.src_size)]
        )
        fb = filter_batch(
            up, self.src_images, self.src_kp, tgt_kp_src, self.recipe.filter, self.backend,
            embedder=self.embedder, source_embeddings=self.src_emb, min_score=self.recipe.pose.min_score,
            frame_hw=(self.h, self.w),
        )  # fmt: skip
        return pd.DataFrame(
            {
                "ssim": ssim(outputs, self.tgt_model),
                "psnr": psnr(outputs, self.tgt_model),
                "oks": fb["oks"].fillna(0.0).to_numpy(),
                "pck": fb["pck"].fillna(0.0).to_numpy(),
                "person_found": (fb["n_keypoints"] > 0).to_numpy(),
                "identity": fb["identity_sim"].to_numpy(),
                "kept": fb["kept"].to_numpy(dtype=bool),
                "reason": fb["reason"].to_numpy(),
                "pose_only_ok": pose_only_ok(fb, self.recipe.filter),
            }
        )


def pose_only_ok(fb: pd.DataFrame, cfg) -> np.ndarray:
    """``bool [N]``: the pairs of :func:`posegen.filter.filter_batch`'s result ``fb`` that pass the
    filter's two pose-only checks under ``cfg`` (:func:`posegen.filter.scores.pose_only_reason`;
    the same for every output of a pair: a pair that fails them is rejected whatever the output)."""
    return np.array([pose_only_reason(r, cfg) == "" for _, r in fb.iterrows()], dtype=bool)


def generate(pipe, scorer: Scorer, steps: int, batch_size: int, seed: int, **guidance) -> tuple[np.ndarray, float]:
    """Re-pose every pair's source to its target pose; returns ``(uint8 [N, h, w, 3], images/s)``."""
    outs = []
    n = len(scorer.pairs)
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        sl = slice(i, min(i + batch_size, n))
        gens = [
            torch.Generator().manual_seed(stable_seed(seed, "quality", s, t))
            for s, t in zip(scorer.pairs["source"][sl], scorer.pairs["target"][sl])
        ]
        outs.append(
            pipe(
                scorer.src_images[sl], scorer.src_kp[sl], scorer.tgt_kp[sl],
                source_sizes=scorer.src_size[sl], target_sizes=scorer.tgt_size[sl],
                num_inference_steps=steps, generator=gens, output_type="np", **guidance,
            )
        )  # fmt: skip
    dt = time.perf_counter() - t0
    return np.concatenate(outs), n / dt


def by_facing(df: pd.DataFrame, source_kp: np.ndarray, target_kp: np.ndarray) -> dict:
    """Per-pair metrics split by the change of facing (:func:`posegen.pose.keypoints.pose_view` of
    the source and target poses): ``opposite`` (front onto back or the reverse), ``side`` (either
    side-on or unknown), ``same``; each ``{"pairs", "oks", "identity", "ssim"}`` (means), plus
    ``oks_swapped`` (OKS to the target with left and right exchanged: high where the output is
    found facing the source's way rather than the target's) when ``df`` has it."""
    from posegen.pose.keypoints import pose_view

    fs, ft = pose_view(source_kp)["facing"].astype(int), pose_view(target_kp)["facing"].astype(int)
    cat = np.where(fs * ft == -1, "opposite", np.where((fs == 0) | (ft == 0), "side", "same"))
    return {c: {"pairs": int((cat == c).sum()), **{m: float(df.loc[cat == c, m].mean()) for m in ("oks", "identity", "ssim", "oks_swapped") if m in df}}
            for c in ("opposite", "side", "same") if (cat == c).any()}  # fmt: skip


def summarise(df: pd.DataFrame) -> dict:
    """Means over pairs (OKS and PCK include failures as 0) plus the kept-rate."""
    return {
        "ssim": float(df["ssim"].mean()),
        "psnr": float(df["psnr"].replace(np.inf, np.nan).mean()),
        "oks": float(df["oks"].mean()),
        "pck": float(df["pck"].mean()),
        "person_found": float(df["person_found"].mean()),
        "identity": float(df["identity"].mean()),
        "kept_rate": float(df["kept"].mean()),
        # the pairs the filter's pose-only checks let through (the ceiling of the kept-rate on a
        # fixed pair list) and the kept-rate among them
        "pose_only_pass": float(df["pose_only_ok"].mean()) if "pose_only_ok" in df else float("nan"),
        "kept_of_pose_only_pass": float(df.loc[df["pose_only_ok"], "kept"].mean()) if "pose_only_ok" in df and df["pose_only_ok"].any() else float("nan"),
        "invented_texture": float(df["texture"].median()) if "texture" in df and df["texture"].notna().any() else float("nan"),
        "rejected_by_reason": df.loc[~df["kept"], "reason"].value_counts().to_dict(),
    }


def evaluate_model(model, scorer: Scorer, *, steps=(10, 20), batch_size=32, seed=0, scheduler=None, guidance=None) -> list[dict]:
    """Rows ``{"model", "steps", metrics...}`` for one model at each step count."""
    pipe = load_pipeline(_pipeline_dir(model), scheduler=scheduler)
    rows = []
    for st in steps:
        outputs, rate = generate(pipe, scorer, st, batch_size, seed, **(guidance or {}))
        rows.append({"model": str(model), "steps": int(st), "images_per_s": rate, **summarise(scorer.score(outputs))})
    return rows


def baseline(scorer: Scorer) -> dict:
    """The trivial baseline: output = source image at the model's resolution."""
    return {"model": "baseline: output = source", "steps": 0, "images_per_s": float("nan"), **summarise(scorer.score(scorer.src_model))}


def _is_latent(model) -> bool:
    index = _pipeline_dir(model) / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name") == "LatentReposePipeline"


def _pipeline_dir(model) -> Path:
    p = Path(model)
    return p / "model" if (p / "model" / "model_index.json").is_file() else p


def render_table(rows: list[dict], title: str) -> Table:
    """A Rich table of :func:`evaluate_model` / :func:`baseline` rows."""
    t = Table(title=title)
    for col in ("model", "steps", "SSIM", "PSNR", "OKS", "PCKh@0.5", "person found", "identity", "kept",
                "invented texture", "img/s"):  # fmt: skip
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            Path(r["model"]).name if os.sep in r["model"] else r["model"], str(r["steps"]),
            f"{r['ssim']:.3f}", f"{r['psnr']:.2f}", f"{r['oks']:.3f}", f"{r['pck']:.3f}",
            f"{r['person_found']:.0%}", f"{r['identity']:.3f}", f"{r['kept_rate']:.0%}", _texture(r),
            "-" if np.isnan(r["images_per_s"]) else f"{r['images_per_s']:.2f}",
        )  # fmt: skip
    return t


def _texture(row: dict) -> str:
    v = row.get("invented_texture", float("nan"))
    return "-" if np.isnan(v) else f"{v:.2f}"


def markdown(rows: list[dict], header: str) -> str:
    """The rows as a Markdown table under ``header``."""
    lines = [header, "", "| model | steps | SSIM | PSNR | OKS | PCKh@0.5 | person found | identity | kept | invented texture | img/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r.get('label', r['model'])} | {r['steps']} | {r['ssim']:.3f} | {r['psnr']:.2f} | {r['oks']:.3f} | "
            f"{r['pck']:.3f} | {r['person_found']:.0%} | {r['identity']:.3f} | {r['kept_rate']:.0%} | {_texture(r)} | "
            f"{'-' if np.isnan(r['images_per_s']) else format(r['images_per_s'], '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def setup(n_pairs: int, resolution, recipe, backend):
    """Pairs, poses and a :class:`Scorer` (the parts every evaluation shares)."""
    from posegen.metrics import ReidEmbedder

    if not CUHK03_VAL.is_dir():
        sys.exit(f"data not found: {CUHK03_VAL} (the ../shared folder beside the repository)")
    manifest, poses = val_poses(backend)
    pairs = load_pairs(manifest, poses).head(n_pairs).reset_index(drop=True)
    return Scorer(backend, ReidEmbedder(OSNET), pairs, poses, resolution, recipe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="posegen train run folder or its model/ folder, or 'default'")
    ap.add_argument("--pairs", type=int, default=200, help="first N pairs of the fixed list")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--scheduler", default=None, help="sampler (default: the model's)")
    ap.add_argument("--recipe", default="tiny", help="recipe whose filter thresholds give the kept-rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="results file suffix")
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.4, 0.5], help="latent models: SDEdit strengths")
    ap.add_argument("--latent-steps", type=int, default=None, help="latent models: DDIM steps (default: the model's)")
    ap.add_argument("--repair-strength", type=float, default=None,
                    help="latent models: SDEdit strength where the warp invented pixels (default: the model's; <= strength: off)")
    ap.add_argument("--starts", nargs="+", default=None, choices=["pixel", "latent"],
                    help="latent models: SDEdit start (default: the model's)")
    ap.add_argument("--no-baselines", action="store_true", help="latent models: only the model rows")
    ap.add_argument("--person-masks", choices=["model", "on", "off"], default="model",
                    help="latent models: remove the source's person mask near the moved parts (default: the model's setting)")
    ap.add_argument("--no-turned-head", action="store_true",
                    help="latent models: do not repaint the head of a person who turns round (the model's default otherwise)")
    ap.add_argument("--sets", nargs="+", default=["same-view", "cross-view"], choices=["same-view", "cross-view", "fashion"],
                    help="latent models: pair sets (fashion: the 95 DeepFashion pairs of ../shared/data/deepfashion-samples)")
    ap.add_argument("--modes", nargs="+", default=["repair"], choices=["repair", "whole"],
                    help="latent models: paste the model's output only where the warp invented pixels (repair) or everywhere")
    ap.add_argument("--backend", default=DEFAULT_BACKEND, help="pose backend for the pair poses and the scoring (default: posegen's)")
    args = ap.parse_args()
    if str(args.model) == "default" or _is_latent(args.model):
        torch.set_num_threads(max(1, torch.get_num_threads()))
        main_latent(args)
        return

    recipe = load_recipe(args.recipe)
    pipe_dir = _pipeline_dir(args.model)
    resolution = tuple(json.loads((pipe_dir / "unet" / "config.json").read_text())["resolution"])
    t0 = time.perf_counter()
    with get_backend(args.backend) as be:
        scorer = setup(args.pairs, resolution, recipe, be)
        rows = [baseline(scorer)]
        rows += evaluate_model(args.model, scorer, steps=args.steps, batch_size=args.batch_size,
                               seed=args.seed, scheduler=args.scheduler)  # fmt: skip
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "pairs": len(scorer.pairs),
        "resolution": list(resolution),
        "recipe_filter": recipe.filter.model_dump(mode="json"),
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    Console(width=160).print(render_table(rows, f"re-posing quality, {len(scorer.pairs)} CUHK03 val cross-view pairs"))
    suffix = f"-{args.tag}" if args.tag else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"repose_quality{suffix}.json", result)
    md = markdown(rows, f"# Re-posing quality ({len(scorer.pairs)} pairs)\n\n`{result['command']}` at commit {result['commit']}")
    atomic_write_text(RESULTS / f"repose_quality{suffix}.md", md)



# --------------------------------------------------------------------------- latent models
SAME_VIEW_FILE = REPO / "benchmarks" / "quality_pairs_same_view.csv"
FRAME = (256, 128)
FASHION = SHARED / "data" / "deepfashion-samples"
FASHION_HW = (256, 176)


def fashion_pairs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 95 DeepFashion pairs (``pairs.csv``, same item, another view) as ``source, target, pid``
    and their ground-truth poses (``annotations.csv``, OpenPose-18 converted to COCO-17 by
    :func:`posegen.pose.formats.read_poses`, score 1 for every annotated joint), with ``width`` and
    ``height`` set from the images (the CSV records no size)."""
    from PIL import Image

    from posegen.pose.formats import read_poses

    if not (FASHION / "pairs.csv").is_file():
        sys.exit(f"data not found: {FASHION} (the ../shared folder beside the repository)")
    raw = pd.read_csv(FASHION / "pairs.csv")
    pairs = pd.DataFrame({"source": raw["from"], "target": raw["to"]})
    pairs["pid"] = [int(flat_to_tree(n).split("/")[3][3:]) for n in pairs["source"]]
    poses = read_poses(FASHION / "annotations.csv")
    sizes = []
    for p in poses["path"]:
        with Image.open(FASHION / "images" / p) as im:
            sizes.append(im.size)
    poses["width"] = [w for w, _ in sizes]
    poses["height"] = [h for _, h in sizes]
    return pairs, poses


def make_same_view_pairs(manifest: pd.DataFrame, poses: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Fixed same-view pairs: per pid, one pair inside view A (k 00-04) and one inside view B
    (k 05-09), both images with a plausible pose (>= 10 joints of score >= 0.5 and the geometry of
    an upright person crop, :func:`posegen.pose.plausibility.pose_plausibility`: the poses
    ``augment`` would use). Returns ``source, target, pid``."""
    from posegen.pose.plausibility import pose_plausibility

    good = poses[usable_poses(poses, min_score=0.5, min_keypoints=10).to_numpy()]
    plaus, _ = pose_plausibility(
        keypoints_array(good), np.stack([good["width"].to_numpy(), good["height"].to_numpy()], 1), min_keypoints=10
    )
    ok = set(good.loc[plaus, "path"])
    m = manifest[manifest["path"].isin(ok)]
    rows = []
    for pid, g in m.groupby("pid", sort=True):
        rng = np.random.default_rng(stable_seed(seed, "same-view-pairs", int(pid)))
        for view in (0, 1):
            ims = sorted(p for p in g["path"] if (int(Path(p).stem.split("_")[1]) >= 5) == bool(view))
            if len(ims) < 2:
                continue
            a, b = rng.choice(len(ims), size=2, replace=False)
            rows.append({"source": ims[a], "target": ims[b], "pid": int(pid)})
    return pd.DataFrame(rows).reset_index(drop=True)


def load_same_view_pairs(manifest: pd.DataFrame, poses: pd.DataFrame) -> pd.DataFrame:
    """The committed same-view pair list, created on first use."""
    if SAME_VIEW_FILE.is_file():
        return pd.read_csv(SAME_VIEW_FILE)
    pairs = make_same_view_pairs(manifest, poses)
    atomic_write_text(SAME_VIEW_FILE, pairs.to_csv(index=False))
    return pairs


class FrameScorer:
    """Scores outputs written at each source's size (see the module docstring, latent models).

    ``compare_hw`` is the ``(h, w)`` at which SSIM / PSNR compare output and real target (256x128
    for CUHK03; 256x176, the photos' own size, for DeepFashion as the pose-transfer papers do);
    ``root`` the folder the pairs' paths are relative to."""

    def __init__(self, backend, embedder, pairs: pd.DataFrame, poses: pd.DataFrame, recipe,
                 root: Path = CUHK03_VAL, compare_hw=None):  # fmt: skip
        _load_pair_data(self, backend, embedder, pairs, poses, recipe, root)
        self.compare_hw = tuple(compare_hw or FRAME)
        self.tgt_frame = np.stack([resize_image(im, self.compare_hw) for im in self.tgt_images])

    def score(self, outputs: list[np.ndarray], used_kp: np.ndarray) -> pd.DataFrame:
        """``outputs[i]``: ``uint8 [H_i, W_i, 3]`` at source i's size; ``used_kp``: ``[N, 17, 3]`` the
        target pose the generator used, in source pixels."""
        from posegen.filter import filter_batch
        from posegen.metrics import psnr, ssim

        frames = np.stack([resize_image(o, self.compare_hw) for o in outputs])
        texture = [invented_texture(o, s, sk, uk, t, ts)
                   for o, s, sk, uk, t, ts in zip(outputs, self.src_images, self.src_kp, used_kp, self.tgt_images, self.tgt_size)]  # fmt: skip
        fb = filter_batch(
            outputs, self.src_images, self.src_kp, used_kp, self.recipe.filter, self.backend,
            embedder=self.embedder, source_embeddings=self.src_emb, min_score=self.recipe.pose.min_score,
            frame_hw=FRAME,
        )  # fmt: skip
        return pd.DataFrame(
            {
                "ssim": ssim(frames, self.tgt_frame),
                "psnr": psnr(frames, self.tgt_frame),
                "oks": fb["oks"].fillna(0.0).to_numpy(),
                "oks_swapped": fb["oks_mirrored"].fillna(0.0).to_numpy(),  # to the target with left and right exchanged
                "pck": fb["pck"].fillna(0.0).to_numpy(),
                "person_found": (fb["n_keypoints"] > 0).to_numpy(),
                "identity": fb["identity_sim"].to_numpy(),
                "kept": fb["kept"].to_numpy(dtype=bool),
                "reason": fb["reason"].to_numpy(),
                "texture": np.array(texture, dtype=np.float64),
                "pose_only_ok": pose_only_ok(fb, self.recipe.filter),
            }
        )


def invented_texture(output, source, source_kp, used_kp, target, target_size, min_area: float = 0.02) -> float:
    """How textured the pixels the warp invented are, relative to the real target there: the mean
    grey-level gradient magnitude (|dx| + |dy|, grey in 0..1) of ``output`` over the repair region
    (:func:`posegen.filter.artifacts.invented_mask` >= 0.5, in the source's 256x128 letterbox
    frame) divided by the same of the real ``target`` (letterboxed in its own frame, where the
    target pose lies at the same frame position when ``align=False``). 1 = as textured as the real
    image there (mostly background); near 0 = a smooth blob. NaN when the region covers less than
    ``min_area`` of the frame or the target is flat there.

    ``output``, ``source``, ``target``: ``uint8 [H, W, 3]``; ``source_kp``, ``used_kp``: ``[17, 3]``
    in source pixels (x right, y down); ``target_size``: the target image's ``(w, h)``."""
    from posegen.filter.artifacts import invented_mask
    from posegen.latent import letterbox_params
    from posegen.repose.latent import FRAME_HW

    found = invented_mask(source, source_kp, used_kp)
    if found is None:
        return float("nan")
    repair, inside = found
    tbox = letterbox_params((int(target_size[0]), int(target_size[1])), FRAME_HW)
    region = (repair >= 0.5) & inside & (tbox.inside_mask() >= 0.5)
    if region.mean() < min_area:
        return float("nan")
    sbox = letterbox_params((source.shape[1], source.shape[0]), FRAME_HW)

    def grad(img, box):
        g = box.image_to_frame(img).astype(np.float32).mean(-1) / 255.0
        return np.abs(np.diff(g, axis=1, append=g[:, -1:])) + np.abs(np.diff(g, axis=0, append=g[-1:]))

    ref = float(grad(target, tbox)[region].mean())
    return float(grad(output, sbox)[region].mean()) / ref if ref > 1e-4 else float("nan")


def warp_baseline(scorer: FrameScorer, kind: str, autoencoder=None) -> tuple[list[np.ndarray], np.ndarray]:
    """Outputs of a warp baseline (a kind of :data:`BASELINES`) at the sources' sizes, and the
    target pose used (source pixels); ``autoencoder`` (TAEF2) for ``encoded-warp`` / ``latent-warp``."""
    from posegen.latent import from_frame_keypoints, letterbox_params, to_frame_keypoints
    from posegen.repose.latent import FRAME_HW, latent_conditions, warp_inputs
    from posegen.repose.warp import CONSTRAINED_WARP, composite, limb_flow, warp

    outs, used = [], []
    for im, sk, tk, ts, real in zip(scorer.src_images, scorer.src_kp, scorer.tgt_kp, scorer.tgt_size, scorer.tgt_images):
        box = letterbox_params((im.shape[1], im.shape[0]), FRAME_HW)
        tbox = letterbox_params((int(ts[0]), int(ts[1])), FRAME_HW)
        skp = torch.from_numpy(to_frame_keypoints(sk, box))[None]
        tkp = torch.from_numpy(to_frame_keypoints(tk, tbox))[None]
        used.append(from_frame_keypoints(tkp[0].numpy(), box))
        if kind in ("source", "target"):  # the target: the real photo, at the source's size
            outs.append(im if kind == "source" else resize_image(real, (im.shape[0], im.shape[1])))
            used[-1] = scale_keypoints(tk, (int(ts[0]), int(ts[1])), (im.shape[1], im.shape[0]))
            continue
        x = torch.from_numpy(box.image_to_frame(im)).permute(2, 0, 1)[None].float() / 255.0
        if kind == "warp":
            grid, _ = limb_flow(skp, tkp, FRAME_HW)
            y = warp(x, grid)
        elif kind == "warp-source":
            grid, wt = limb_flow(skp, tkp, FRAME_HW, max_part_scale=1.25)
            y = composite(x, grid, wt)
        elif kind == "constrained-source":
            grid, wt = limb_flow(skp, tkp, FRAME_HW, **CONSTRAINED_WARP)
            y = composite(x, grid, wt)
        elif kind == "constrained-fill":
            y = warp_inputs(x, skp, tkp, inside=torch.from_numpy(box.inside_mask())[None, None], upscale=box.scale[0])
        elif kind == "latent-warp":  # the same warp applied to the latent (flow at 32x16), decoded
            with torch.no_grad():
                _, wl = latent_conditions(autoencoder.encode(x), skp, tkp)
                y = autoencoder.decode(wl)
        elif kind == "encoded-warp":  # the pixel warp through the autoencoder (SDEdit's start)
            with torch.no_grad():
                y = autoencoder.decode(autoencoder.encode(warp_inputs(x, skp, tkp, inside=torch.from_numpy(box.inside_mask())[None, None], upscale=box.scale[0])))
        else:
            raise ValueError(kind)
        u8 = (y[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        outs.append(box.frame_to_image(u8))
    return outs, np.stack(used).astype(np.float32)


def latent_generate(pipe, scorer: FrameScorer, *, steps: int | None, strength: float, batch_size: int, seed: int, start: str = "pixel",
                    repair_only=None, repair_strength: float | None = None, turned_head: bool | None = None,
                    person_masks: bool | None = None):  # fmt: skip
    """The model's outputs (sources' sizes), the used target pose in source pixels, and images/s."""
    outs, used = [], []
    n = len(scorer.pairs)
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        sl = slice(i, min(i + batch_size, n))
        gens = [torch.Generator().manual_seed(stable_seed(seed, "quality", s, t))
                for s, t in zip(scorer.pairs["source"][sl], scorer.pairs["target"][sl])]  # fmt: skip
        imgs, kp = pipe(
            scorer.src_images[sl], scorer.src_kp[sl], scorer.tgt_kp[sl], target_sizes=scorer.tgt_size[sl],
            num_inference_steps=steps, strength=strength, generator=gens, align=False, return_keypoints=True,
            start=start, repair_only=repair_only, repair_strength=repair_strength, turned_head=turned_head,
            person_masks=person_masks,
        )  # fmt: skip
        outs += imgs
        used += [scale_keypoints(k, (int(ts[0]), int(ts[1])), (im.shape[1], im.shape[0]))
                 for k, ts, im in zip(kp, scorer.tgt_size[sl], scorer.src_images[sl])]  # fmt: skip
    return outs, np.stack(used).astype(np.float32), n / (time.perf_counter() - t0)


BASELINES = (
    ("target", "reference: output = the real target photo"),
    ("source", "baseline: output = source"),
    ("warp", "limb warp (free parts, no background)"),
    ("warp-source", "limb warp over the source (part scale <= 1.25)"),
    ("constrained-source", "constrained warp over the source"),
    ("constrained-fill", "constrained warp + filled background"),
    ("encoded-warp", "... through TAEF2 (SDEdit start, start=pixel)"),
    ("latent-warp", "... warped in latent space (start=latent)"),
)


def evaluate_latent(model_dir, pair_sets: dict, poses, recipe, backend, *, strengths, steps, batch_size, seed,
                    starts=None, repair_modes=(True,), baselines=True, data: dict | None = None,
                    repair_strength: float | None = None, turned_head: bool | None = None,
                    person_masks: bool | None = None) -> dict:  # fmt: skip
    """Rows per pair set: the baselines and the model at each strength.

    ``data`` maps a pair set's name to ``(root, poses, compare_hw)`` when it is not a CUHK03 val set
    (the fashion pairs); the others use ``poses`` and the CUHK03 val root. ``steps`` and
    ``repair_strength``, ``turned_head`` and ``starts`` None: the model's own sampling defaults."""
    from posegen.metrics import ReidEmbedder

    from posegen.filter import load_embedder

    pipe = load_pipeline(model_dir)
    steps = int(steps or pipe.config.num_inference_steps)
    rs = getattr(pipe.config, "repair_strength", None) if repair_strength is None else repair_strength
    starts = tuple(starts) if starts else (str(getattr(pipe.config, "start", "pixel")),)
    # the recipe's identity embedder when it names one (deepfashion: the garment colour histogram)
    embedder = load_embedder(recipe.filter.reid_weights) if recipe.filter.reid_weights else ReidEmbedder(OSNET)
    out = {}
    for name, pairs in pair_sets.items():
        root, set_poses, compare_hw = (data or {}).get(name, (CUHK03_VAL, poses, FRAME))
        scorer = FrameScorer(backend, embedder, pairs, set_poses, recipe, root, compare_hw)
        rows = []
        def summary(outs, used) -> dict:
            df = scorer.score(outs, used)
            return {**summarise(df), "by_facing": by_facing(df, scorer.src_kp, scorer.tgt_kp)}

        for kind, label in BASELINES if baselines else ():
            outs, used = warp_baseline(scorer, kind, pipe.autoencoder)
            rows.append({"model": label, "steps": 0, "images_per_s": float("nan"), **summary(outs, used)})
        for st in strengths:
            for start in starts:
                for ro in repair_modes:
                    outs, used, rate = latent_generate(pipe, scorer, steps=steps, strength=st, batch_size=batch_size,
                                                       seed=seed, start=start, repair_only=ro, repair_strength=rs,
                                                       turned_head=turned_head, person_masks=person_masks)  # fmt: skip
                    mode = "repair only" if ro else "whole image"
                    if rs is not None and rs > st:
                        mode += f", repair strength {rs}"
                        if turned_head is False:
                            mode += ", turned head not repainted"
                    if person_masks is not None and person_masks != bool(getattr(pipe.config, "person_masks", False)):
                        mode += ", person masks" if person_masks else ", no person masks"
                    rows.append({"model": f"model, strength {st}, start={start}, {mode}", "steps": steps,
                                 "images_per_s": rate, **summary(outs, used)})  # fmt: skip
        out[name] = rows
        Console(width=160).print(render_table(rows, f"{name}: {len(pairs)} pairs"))
    return out




def main_latent(args) -> None:
    """The latent-model protocol (see the module docstring)."""
    recipe = load_recipe(args.recipe if args.recipe != "tiny" else "default")  # a name or a YAML path
    model_dir = None if str(args.model) == "default" else _pipeline_dir(args.model)
    t0 = time.perf_counter()
    with get_backend(args.backend) as be:
        sets, data, poses = {}, {}, None
        if {"same-view", "cross-view"} & set(args.sets):
            if not CUHK03_VAL.is_dir():
                sys.exit(f"data not found: {CUHK03_VAL} (the ../shared folder beside the repository)")
            manifest, poses = val_poses(be)
            if "same-view" in args.sets:
                sets["same-view"] = load_same_view_pairs(manifest, poses).head(args.pairs).reset_index(drop=True)
            if "cross-view" in args.sets:
                sets["cross-view"] = load_pairs(manifest, poses).head(args.pairs).reset_index(drop=True)
        if "fashion" in args.sets:
            fpairs, fposes = fashion_pairs()
            sets["fashion"] = fpairs.head(args.pairs).reset_index(drop=True)
            data["fashion"] = (FASHION / "images", fposes, FASHION_HW)
        results = evaluate_latent(model_dir, sets, poses, recipe, be, strengths=args.strengths, steps=args.latent_steps,
                                  batch_size=args.batch_size, seed=args.seed, starts=args.starts,
                                  baselines=not args.no_baselines, data=data, repair_strength=args.repair_strength,
                                  turned_head=False if args.no_turned_head else None,
                                  person_masks={"on": True, "off": False}.get(args.person_masks),
                                  repair_modes=[{"repair": True, "whole": False}[m] for m in args.modes])  # fmt: skip
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "model": str(model_dir or "default"),
        "recipe_filter": recipe.filter.model_dump(mode="json"),
        "pair_sets": {k: len(v) for k, v in sets.items()},
        "rows": results,
        "seconds": time.perf_counter() - t0,
    }
    suffix = f"-{args.tag}" if args.tag else ("-fashion" if list(sets) == ["fashion"] else "-default")
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"repose_quality{suffix}.json", result)
    md = [f"# Re-posing quality of the default model\n\n`{result['command']}` at commit {result['commit']} "
          f"({result['machine']}; {result['seconds'] / 60:.1f} min)\n"]  # fmt: skip
    for name, rows in results.items():
        what = ("DeepFashion In-shop samples, ground-truth keypoints, SSIM/PSNR at 256x176" if name == "fashion"
                else "CUHK03 val")  # fmt: skip
        md.append(markdown(rows, f"## {name} pairs ({result['pair_sets'][name]}, {what})"))
        for r in rows:
            if r["rejected_by_reason"]:
                md.append(f"- {r['model']}: rejected by reason {r['rejected_by_reason']}")
        for r in rows:
            if np.isfinite(r.get("pose_only_pass", float("nan"))):
                md.append(f"- {r['model']}: {r['pose_only_pass']:.0%} of the pairs pass the filter's pose-only checks "
                          f"(invented background, copied body parts: the kept-rate's ceiling on these pairs); "
                          f"kept among them {r['kept_of_pose_only_pass']:.0%}")  # fmt: skip
        md.append("")
        md.append("By change of facing (pose_view of source and target: opposite = front onto back or the reverse), "
                  "pairs: OKS / identity / SSIM / OKS to the target with left and right swapped")  # fmt: skip
        md.append("")
        for r in rows:
            parts = [f"{c} {v['pairs']}: {v['oks']:.3f} / {v['identity']:.3f} / {v['ssim']:.3f}"
                     + (f" / {v['oks_swapped']:.3f}" if "oks_swapped" in v else "") for c, v in r.get("by_facing", {}).items()]  # fmt: skip
            md.append(f"- {r['model']}: " + "; ".join(parts))
        md.append("")
    atomic_write_text(RESULTS / f"repose_quality{suffix}.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
