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
4. **image artifacts** (``filter.max_hole_fraction``, ``filter.max_seam_fraction``,
   ``filter.min_sharpness_ratio``): :func:`posegen.filter.artifacts.artifact_scores` at 256x128 on
   CUHK03 train identities ``pid % --artifact-pid-step == 0`` with a usable BlazePose-full pose
   (>= 10 joints of score >= 0.5; poses cached under ``runs/bench-cache``): (a) **real**: each image
   as the "output" scored against another real image of the same person (any view) as the source:
   these must pass; (b) **damaged**: the source warped by :func:`posegen.repose.warp.limb_flow` /
   :func:`~posegen.repose.warp.warp` at 256x128 to the pose of another image of the person, no
   compositing (pixels sampled outside the source frame are black), for a same-view target, the same
   multiplied by the flow's confidence weight (everything off the body is black), and a cross-view
   target (front <-> back: the warp tears and stretches); the result is resized to the source's size,
   as ``augment`` writes outputs. Reports the percentiles per set and the share each check (with the
   recipe defaults) rejects; saves a contact sheet of rejected and kept damaged images under
   ``runs/bench-cache/filter-artifacts-sheet.png``.

Prints the percentiles and writes ``benchmarks/results/filter_thresholds.{json,md}``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/filter_thresholds.py [--pids 60] [--images 150]
        [--parts identity,near_copy,pose_difference,artifacts] [--artifact-pid-step 9]

Parts not run are carried over from the existing ``filter_thresholds.json`` (each part records the
command that produced it).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import repose_quality as rq  # noqa: E402

from posegen._io import atomic_write_json, atomic_write_text  # noqa: E402
from posegen.data.images import read_image  # noqa: E402
from posegen.filter.artifacts import ARTIFACT_COLUMNS, WORK_HW, artifact_scores  # noqa: E402
from posegen.filter.scores import _artifact_reason  # noqa: E402
from posegen.metrics import ReidEmbedder, oks, ssim  # noqa: E402
from posegen.pose.formats import keypoints_array, read_poses  # noqa: E402
from posegen.pose.keypoints import scale_keypoints  # noqa: E402
from posegen.recipe import FilterConfig  # noqa: E402
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


def _artifact_poses(step: int):
    """CUHK03 train images of pids ``% step == 0`` with >= 10 joints of score >= 0.5: (paths, kp)."""
    import pandas as pd

    from posegen.data import load_dataset
    from posegen.pose.backends import get_backend
    from posegen.pose.extract import extract_poses

    manifest = load_dataset(TRAIN)
    manifest = manifest[manifest["pid"] % step == 0].reset_index(drop=True)
    rq.CACHE.mkdir(parents=True, exist_ok=True)
    with get_backend() as be:  # posegen's default pose backend (results before 7ee55a1: BlazePose full)
        poses = extract_poses(manifest, TRAIN, be, out=rq.CACHE / f"cuhk03-train-poses-pidstep{step}-{be.name}.parquet")
    poses = poses[poses["status"] == "ok"].reset_index(drop=True)
    kp = keypoints_array(poses)
    ok = (kp[:, :, 2] >= 0.5).sum(1) >= 10
    return pd.Series(poses["path"][ok].to_list()), kp[ok]


def _damage(src: np.ndarray, s_kp, t_kp, t_size, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """``src`` warped at 256x128 to the target pose (no compositing), resized back to ``src``'s size;
    with the target pose in pixels of that image."""
    import torch

    from posegen.repose.warp import limb_flow, warp

    H, W = WORK_HW
    sk = scale_keypoints(s_kp, src.shape[1::-1], (W, H))
    tk = scale_keypoints(t_kp, t_size, (W, H))
    grid, weight = limb_flow(sk[None], tk[None], WORK_HW)
    x = torch.from_numpy(np.array(resize_image(src, WORK_HW))).permute(2, 0, 1).float()[None] / 255.0
    y = warp(x, grid, weight if weighted else None)[0].permute(1, 2, 0).numpy()
    y = np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)
    return resize_image(y, src.shape[:2]), scale_keypoints(t_kp, t_size, src.shape[1::-1])


def artifacts(step: int, rng, sheet: Path | None = None) -> dict:
    """Artifact score distributions on real and warp-damaged images (module docstring, part 4)."""
    paths, kp = _artifact_poses(step)
    pid = paths.str[:4].to_numpy()
    view_a = paths.str[5:7].astype(int).to_numpy() < 5
    cache: dict[int, np.ndarray] = {}

    def img(i):
        if i not in cache:
            cache[i] = read_image(TRAIN / paths[i])
        return cache[i]

    cfg = FilterConfig()
    sets = ("real (another image of the person)", "same-view warp", "same-view warp x confidence", "cross-view warp")
    rows = {k: [] for k in sets}
    examples = []
    for i in range(len(paths)):
        same = [j for j in np.flatnonzero(pid == pid[i]) if j != i and view_a[j] == view_a[i]]
        other = [j for j in np.flatnonzero(pid == pid[i]) if view_a[j] != view_a[i]]
        cand = same + other
        if cand:  # real: image j is the "output", image i its source
            j = cand[rng.integers(len(cand))]
            rows[sets[0]].append(artifact_scores(img(j), img(i), kp[j], kp[i]))
        jobs = []
        if same:
            j = same[rng.integers(len(same))]
            jobs += [(sets[1], j, False), (sets[2], j, True)]
        if other:
            jobs.append((sets[3], other[rng.integers(len(other))], False))
        for name, j, weighted in jobs:
            out, tk = _damage(img(i), kp[i], kp[j], img(j).shape[1::-1], weighted)
            sc = artifact_scores(out, img(i), tk, kp[i])
            rows[name].append(sc)
            if name != sets[2] and len(examples) < 400:
                examples.append((img(i), out, sc, _artifact_reason(sc, cfg)))
    out = {"pids": int(len(set(pid))), "images": int(len(paths)), "pid_step": step,
           "thresholds": {"max_hole_fraction": cfg.max_hole_fraction, "max_seam_fraction": cfg.max_seam_fraction,
                          "min_sharpness_ratio": cfg.min_sharpness_ratio}, "sets": {}}  # fmt: skip
    for name, rs in rows.items():
        reasons = [_artifact_reason(r, cfg) for r in rs]
        out["sets"][name] = {
            "scores": {c: _pct([r[c] for r in rs if np.isfinite(r[c])]) for c in ARTIFACT_COLUMNS},
            "rejected": float(np.mean([r != "" for r in reasons])),
            "rejected_by": {p: float(np.mean([r.startswith(p) for r in reasons])) for p in ("holes in output", "torn seams", "smeared output")},
            "n": len(rs),
        }
    if sheet is not None:
        _contact_sheet(examples, sheet, rng)
    return out


def _contact_sheet(examples, path: Path, rng, per_row: int = 8) -> None:
    """Source | damaged output pairs at 256x128: a row group of rejected ones, then kept ones."""
    from PIL import ImageDraw

    def tile(src, out, sc, reason):
        t = np.concatenate([resize_image(src, WORK_HW), resize_image(out, WORK_HW), np.zeros((WORK_HW[0], 4, 3), np.uint8)], 1)
        im = Image.fromarray(np.concatenate([t, np.zeros((24, t.shape[1], 3), np.uint8)], 0))
        d = ImageDraw.Draw(im)
        d.text((2, WORK_HW[0] + 1), (reason.split(" (")[0] or "kept")[:20], fill=(255, 80, 80) if reason else (80, 255, 80))
        d.text((2, WORK_HW[0] + 12), f"h{sc['hole_fraction']:.3f} s{sc['sharpness_ratio']:.2f}", fill=(255, 255, 0))
        return np.asarray(im)

    rej = [e for e in examples if e[3]]
    kept = [e for e in examples if not e[3]]
    tiles = []
    for group in (rej, kept):
        pick = [group[k] for k in rng.permutation(len(group))[: 2 * per_row]]
        tiles += [tile(*e) for e in pick] + [np.zeros_like(tile(*examples[0]))] * ((-len(pick)) % per_row)
    grid = np.concatenate([np.concatenate(tiles[k : k + per_row], 1) for k in range(0, len(tiles), per_row)], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def _artifact_md(a: dict) -> list[str]:
    t = a["thresholds"]
    lines = [f"\n## image artifacts at 256x128 ({a['images']} CUHK03 train images of {a['pids']} pids)\n",
             f"Checks with the recipe defaults: hole fraction > {t['max_hole_fraction']}, seam fraction > "
             f"{t['max_seam_fraction']} (None = off), sharpness ratio < {t['min_sharpness_ratio']}.\n"]  # fmt: skip
    head = "| set | " + " | ".join(f"p{p}" for p in PCTS) + " | n |\n|---|" + "---:|" * (len(PCTS) + 1)
    for c in ARTIFACT_COLUMNS:
        lines += [f"\n### {c}\n", head]
        for name, d in a["sets"].items():
            q = d["scores"][c]
            lines.append(f"| {name} | " + " | ".join(f"{q[f'p{p}']:.4f}" for p in PCTS) + f" | {q['n']} |")
    lines += ["\n### share rejected by the artifact checks (first failing check)\n",
              "| set | rejected | holes | torn seams | smeared | n |\n|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, d in a["sets"].items():
        b = d["rejected_by"]
        lines.append(f"| {name} | {d['rejected']:.3f} | {b['holes in output']:.3f} | {b['torn seams']:.3f} | {b['smeared output']:.3f} | {d['n']} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pids", type=int, default=60)
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--pose-pairs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="identity,near_copy,pose_difference,artifacts")
    ap.add_argument("--artifact-pid-step", type=int, default=9)
    args = ap.parse_args()
    if not TRAIN.is_dir():
        sys.exit(f"data not found: {TRAIN} (the ../shared folder beside the repository)")
    parts = set(args.parts.split(","))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    old_file = rq.RESULTS / "filter_thresholds.json"
    res = json.loads(old_file.read_text()) if old_file.exists() and parts != {"identity", "near_copy", "pose_difference", "artifacts"} else {}
    res.setdefault("commands", {k: f"{res.get('command', '?')} at commit {res.get('commit', '?')}" for k in ("identity", "near_copy", "pose_difference") if k in res})
    res |= {"command": command, "commit": rq.commit()}
    runners = {
        "identity": lambda: identity(args.pids, np.random.default_rng(args.seed)),
        "near_copy": lambda: near_copy(args.images, np.random.default_rng(args.seed)),
        "pose_difference": lambda: pose_difference(args.pose_pairs, np.random.default_rng(args.seed)),
        "artifacts": lambda: artifacts(args.artifact_pid_step, np.random.default_rng(args.seed), rq.CACHE / "filter-artifacts-sheet.png"),
    }
    for k, run in runners.items():
        if k in parts:
            res[k] = run()
            res["commands"][k] = f"{command} at commit {res['commit']}"
    lines = ["# Filter threshold measurements\n", "Each part was produced by:\n"]
    lines += ["- {}: `{}` at commit {}".format(k, *c.rsplit(" at commit ", 1)) for k, c in res["commands"].items()]
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
    if "artifacts" in res:
        lines += _artifact_md(res["artifacts"])
    md = "\n".join(lines) + "\n"
    print(md)
    atomic_write_json(rq.RESULTS / "filter_thresholds.json", res)
    atomic_write_text(rq.RESULTS / "filter_thresholds.md", md)


if __name__ == "__main__":
    main()
