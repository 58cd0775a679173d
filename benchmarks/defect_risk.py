"""A defect risk for target poses, fitted on the outputs labelled blind by ``blind_defects.py``.

Every round of ``benchmarks/blind_defects.py`` leaves labelled kept outputs (defect or not, judged by
eye before unblinding) in ``benchmarks/results/blind_defects-TAG.json``. This script gathers them
with four quantities ``augment`` knows *before* it generates an output, from the poses alone:

- ``foreign_fraction`` and ``invented_fraction``: the filter's pose-only predictions of the warp's
  copied body parts and invented background (``posegen.filter.artifacts``, from the run's manifest);
- ``arm_motion`` and ``leg_motion``: the largest displacement of an elbow or wrist (knee or ankle)
  between the source pose and the target placed on it, in source torso lengths, before
  ``augment.limit_limb_motion`` (``posegen.pose.keypoints.joint_motion``, the round's key).

``table`` writes them to ``benchmarks/labels/defect_features.csv`` (committed: the runs the rounds
looked at live in the git-ignored ``runs/`` and may be gone; rows of rounds whose runs are gone are
kept from the existing file). ``fit`` fits an L2-regularised logistic regression
(:class:`sklearn.linear_model.LogisticRegression` on standardised features), reports its ROC AUC
with each round held out in turn (labels drift between rounds, so a held-out round is the honest
test) and the defect share by risk quintile within each round, and prints the weights in the
features' own units. Writes ``benchmarks/results/defect_risk.{md,json}``. ``compare`` scores augment
outputs with the fitted model (the model's own view of their defect share, a cheap proxy between
blind rounds, not a count by eye).

What it found (see ``benchmarks/results/defect_risk.md``): each of the four predicts a defect a little
(ROC AUC 0.55-0.59 alone, 0.62 together on a held-out round, averaged over rounds), the leg motion and the copied
body parts most; the default recipe's tighter limb-motion limits and honour margins follow from it.
Ranking each source's candidate targets by the fitted risk (a pool of 3 or 10 candidates per target)
moved the model's predicted defect share of the README main job only from 51 % to 49 %: most sources
have few candidates within the limb-motion limits, so it was not kept. ``embed``: OSNet embeddings of
the outputs reach ROC AUC 0.78 with a run held out but 0.58 with a source identity held out (the
rounds share 13 people, and some people's outputs are defective whatever the target): too few
identities are labelled to learn a defect check from appearance.

Usage::

    .venv/bin/pip install -c constraints.txt -e ".[bench]"   # scikit-learn
    .venv/bin/python benchmarks/defect_risk.py table   # needs the rounds' runs under runs/
    .venv/bin/python benchmarks/defect_risk.py fit
    .venv/bin/python benchmarks/defect_risk.py compare RUN_A RUN_B   # augment outputs under the fitted risk
    .venv/bin/python benchmarks/defect_risk.py repaint TAG...        # the repainted region's scores vs the labels
    .venv/bin/python benchmarks/defect_risk.py embed                 # OSNet embeddings of the outputs vs the labels
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from _common import REPO, RESULTS, commit

sys.path.insert(0, str(REPO))

from posegen._io import atomic_write_json, atomic_write_text  # noqa: E402

FEATURES = ["foreign_fraction", "invented_fraction", "arm_motion", "leg_motion"]
TABLE = REPO / "benchmarks" / "labels" / "defect_features.csv"


def table() -> pd.DataFrame:
    """Gather the labelled rows of every round whose runs still exist; keep the others' old rows."""
    old = pd.read_csv(TABLE) if TABLE.exists() else pd.DataFrame(columns=["tag", "run", "path", "defect", *FEATURES])
    frames, done = [], set()
    for res in sorted(RESULTS.glob("blind_defects-*.json")):
        d = json.loads(res.read_text())
        if "key" not in d:
            continue
        tag = res.stem.split("-", 1)[1]
        key = pd.DataFrame(d["key"])
        if not {"defect", "arm_motion", "leg_motion"} <= set(key.columns):
            continue
        runs = key["run"].unique()
        if not all((REPO / r / "manifest.parquet").exists() for r in runs):
            continue  # the old rows of this round (if any) stay
        for run, part in key.groupby("run"):
            m = pd.read_parquet(REPO / run / "manifest.parquet").set_index("path")
            part = part.join(m[["foreign_fraction", "invented_fraction"]], on="path")
            frames.append(part.assign(tag=tag)[["tag", "run", "path", "defect", *FEATURES]])
        done.add(tag)
    new = pd.concat([old[~old["tag"].isin(done)], *frames], ignore_index=True).sort_values(["tag", "run", "path"])
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(TABLE, new.to_csv(index=False, float_format="%.6g"))
    print(f"{len(new)} labelled rows from {new['tag'].nunique()} rounds ({len(done)} read from their runs) -> {TABLE.relative_to(REPO)}")
    return new


def _model(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c))


def fit(c: float) -> None:
    """Held-out-round AUC, quintile shares and the weights in the features' units."""
    from sklearn.metrics import roc_auc_score

    t = pd.read_csv(TABLE).dropna(subset=FEATURES)
    x, y, g = t[FEATURES].to_numpy(np.float64), t["defect"].to_numpy(bool), t["tag"].to_numpy()
    held = np.zeros(len(t))
    for tag in np.unique(g):
        tr = g != tag
        held[~tr] = _model(c).fit(x[tr], y[tr]).decision_function(x[~tr])
    per_round = {tag: float(roc_auc_score(y[g == tag], held[g == tag])) for tag in np.unique(g)}
    single = {f: float(roc_auc_score(y, t[f])) for f in FEATURES}
    quint = np.zeros(len(t), dtype=np.int64)  # risk quintile within each round
    for tag in np.unique(g):
        i = np.flatnonzero(g == tag)
        quint[i] = (np.argsort(np.argsort(held[i], kind="stable")) * 5) // len(i)
    shares = [float(y[quint == q].mean()) for q in range(5)]
    m = _model(c).fit(x, y)
    sc, lr = m[0], m[1]
    w = lr.coef_[0] / sc.scale_
    b = float(lr.intercept_[0] - (w * sc.mean_).sum())
    weights = {f: float(v) for f, v in zip(FEATURES, w)}
    cmd = "python benchmarks/defect_risk.py fit" + (f" --c {c:g}" if c != 1.0 else "")
    lines = ["# A defect risk for target poses, from the outputs labelled blind\n", f"`{cmd}` at commit {commit()}\n",
             f"{len(t)} labelled kept outputs from {len(per_round)} rounds (`benchmarks/labels/defect_features.csv`), "
             f"{int(y.sum())} ({y.mean():.0%}) with a visible defect. Logistic regression on standardised "
             f"{', '.join(FEATURES)} (C = {c:g}).\n",
             "ROC AUC of each feature alone (all rows): " + ", ".join(f"{f} {v:.3f}" for f, v in single.items()) + "\n",
             f"ROC AUC with each round held out: pooled {roc_auc_score(y, held):.3f}; per round "
             + ", ".join(f"{k} {v:.2f}" for k, v in per_round.items()) + f" (mean {np.mean(list(per_round.values())):.3f})\n",
             "Defect share by quintile of the held-out risk within each round (1 = lowest risk):\n",
             "| quintile | 1 | 2 | 3 | 4 | 5 |", "| --- | ---: | ---: | ---: | ---: | ---: |",
             "| defect share | " + " | ".join(f"{s:.0%}" for s in shares) + " |\n",
             "Fitted on all rows, in the features' own units (log-odds of a defect = intercept + sum of weight x feature):\n",
             "| feature | weight |", "| --- | ---: |"]
    lines += [f"| {f} | {v:.4g} |" for f, v in weights.items()]
    lines += [f"| intercept | {b:.4g} |"]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(RESULTS / "defect_risk.md", text + "\n")
    atomic_write_json(RESULTS / "defect_risk.json", dict(command=cmd, commit=commit(), rows=len(t), defects=int(y.sum()), c=c,
                                                          auc_single=single, auc_held_out_rounds=per_round,
                                                          auc_held_out_pooled=float(roc_auc_score(y, held)),
                                                          quintile_defect_share=shares, weights=weights, intercept=b))


def compare(runs: list[Path]) -> None:
    """Per run: the kept outputs' predicted defect share under the fitted risk (mean probability;
    the model's own view, not a count by eye), their mean risk features and how far their targets
    move the person (the manifest's ``source_pose_oks``: OKS of the pose the model was asked for,
    placed and limited, to the source pose; lower = a bigger change). Writes ``benchmarks/results/defect_risk-compare.md``."""
    from blind_defects import _motions

    fitted = json.loads((RESULTS / "defect_risk.json").read_text())
    w, b = fitted["weights"], fitted["intercept"]
    lines = ["# Kept outputs under the fitted defect risk\n",
             f"`python benchmarks/defect_risk.py compare {' '.join(map(str, runs))}` at commit {commit()}; "
             f"weights of `benchmarks/results/defect_risk.json` ({fitted['commit']})\n",
             "| run | generated | kept | predicted defect share (kept) | foreign | invented | arm motion | leg motion "
             "| OKS of the asked pose to the source |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for run in runs:
        m = pd.read_parquet(run / "manifest.parquet")
        gen = m[m["synthetic"] & (m["k"] > 0) & (m["path"] != "")]
        kept = gen[gen["kept"].astype(bool)].copy()
        mot = np.array(_motions(run, kept["path"]), dtype=np.float64).reshape(-1, 2)
        kept["arm_motion"], kept["leg_motion"] = mot[:, 0], mot[:, 1]
        logit = b + sum(v * np.nan_to_num(kept[f].to_numpy(np.float64)) for f, v in w.items())
        lines.append(f"| {run} | {len(gen)} | {len(kept)} | {np.mean(1 / (1 + np.exp(-logit))):.0%} | "
                     + " | ".join(f"{np.nanmean(kept[f]):.3f}" for f in FEATURES) + f" | {kept['source_pose_oks'].mean():.3f} |")
    text = "\n".join(lines)
    print(text)
    atomic_write_text(RESULTS / "defect_risk-compare.md", text + "\n")


def _repaint_scores(run: Path, recipe, row, source_dir: Path) -> dict:
    """Scores of one output's repainted region: its share of the frame (all of it and below the
    target's hips), the mean absolute difference between the output and the pixel warp's filled-in
    background there (0..1 grey levels, as a sum over the frame too), how much darker than that fill
    it is, and its grey-level gradient relative to the source's whole frame."""
    import torch
    from PIL import Image

    from posegen.augment.run import placed_target
    from posegen.latent import letterbox_params, to_frame_keypoints
    from posegen.repose.latent import FRAME_HW, warp_inputs

    poses = pd.read_parquet(run / ".posegen" / "poses.parquet").set_index("path")
    sk = np.asarray(poses.loc[row["source"], "keypoints"], np.float32).reshape(17, 3)
    tk = np.asarray(poses.loc[row["target_pose_source"], "keypoints"], np.float32).reshape(17, 3)
    placed = placed_target(recipe, sk, tk)
    src_img = np.asarray(Image.open(source_dir / row["source"]).convert("RGB"))
    box = letterbox_params((src_img.shape[1], src_img.shape[0]), FRAME_HW)
    frame = box.image_to_frame(src_img)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    s_kp = torch.from_numpy(to_frame_keypoints(sk, box))[None]
    t_kp = torch.from_numpy(to_frame_keypoints(placed, box))[None]
    inside = torch.from_numpy(np.ascontiguousarray(box.inside_mask()))[None, None]
    warp, repair = warp_inputs(x, s_kp, t_kp, recipe.pose.min_score, return_repair=True, inside=inside, upscale=[box.scale[0]])
    fill = warp[0].permute(1, 2, 0).numpy()
    mask = repair[0, 0].numpy() > 0.5
    out = box.image_to_frame(np.asarray(Image.open(run / row["path"]).convert("RGB"))).astype(np.float32) / 255.0
    f = {"area": float(mask.mean())}
    if mask.sum() < 5:
        return f

    def grad(a: np.ndarray) -> np.ndarray:
        g = a.mean(2)
        return np.abs(np.diff(g, axis=1, append=g[:, -1:])) + np.abs(np.diff(g, axis=0, append=g[-1:]))

    dev = np.abs(out - fill).mean(2)
    hips = np.nanmean(t_kp[0, 11:13, 1].numpy())
    lower = mask & (np.arange(mask.shape[0])[:, None] > hips)
    f.update(area_lower=float(lower.mean()), dev_mean=float(dev[mask].mean()), dev_sum=float(dev[mask].sum() / mask.size),
             dev_lower=float(dev[lower].sum() / mask.size), dark_mean=float((fill.mean(2) - out.mean(2))[mask].mean()),
             grad_ratio=float(grad(out)[mask].mean() / (grad(frame.astype(np.float32) / 255.0)[inside[0, 0].numpy() > 0.5].mean() + 1e-6)))  # fmt: skip
    return f


def repaint(tags: list[str], source_dir: Path) -> None:
    """ROC AUC of scores of the repainted region (:func:`_repaint_scores`) for the outputs labelled
    in rounds ``tags``: could a filter check on them reject what the eye calls defective? Each run's
    outputs are rebuilt with its own recipe (``OUT/.posegen/run.json``) and this checkout's warp, so
    runs made with other warp code (a scratch edit) do not belong here; runs made with person masks
    are left out (their repaint region needs the segmenter). Writes
    ``benchmarks/results/defect_risk-repaint.md``."""
    from sklearn.metrics import roc_auc_score

    from posegen.recipe import Recipe

    rows, skipped = [], set()
    for tag in tags:
        key = pd.DataFrame(json.loads((RESULTS / f"blind_defects-{tag}.json").read_text())["key"])
        for run, part in key.groupby("run"):
            run = REPO / run
            recipe = Recipe.model_validate(json.loads((run / ".posegen" / "run.json").read_text())["recipe"])
            if recipe.sample.person_masks:
                skipped.add(str(run.relative_to(REPO)))
                continue
            m = pd.read_parquet(run / "manifest.parquet").set_index("path")
            for _, r in part.iterrows():
                row = m.loc[r["path"]]
                rows.append({"defect": bool(r["defect"]), **_repaint_scores(run, recipe, {"path": r["path"], **row.to_dict()}, source_dir)})
    t = pd.DataFrame(rows)
    cmd = "python benchmarks/defect_risk.py repaint " + " ".join(tags)
    lines = ["# Scores of the repainted region against the blind labels\n", f"`{cmd}` at commit {commit()}\n",
             f"{len(t)} labelled kept outputs, {int(t['defect'].sum())} with a visible defect"
             + (f"; left out (person masks): {', '.join(sorted(skipped))}" if skipped else "") + ".\n",
             "| score | ROC AUC | median, defect | median, no defect |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for c in ["area", "area_lower", "dev_mean", "dev_sum", "dev_lower", "dark_mean", "grad_ratio"]:
        d = t.dropna(subset=[c])
        y = d["defect"].to_numpy(bool)
        lines.append(f"| {c} | {roc_auc_score(y, d[c]):.3f} | {d.loc[y, c].median():.4f} | {d.loc[~y, c].median():.4f} |")
    text = "\n".join(lines)
    print(text)
    atomic_write_text(RESULTS / "defect_risk-repaint.md", text + "\n")


def embed(weights: Path, source_dir: Path, c: float) -> None:
    """Could an appearance model learn the eye's labels? The OSNet embedding (``weights``, 512-d,
    L2-normalised) of each labelled output, alone and minus its source's, through the same logistic
    regression as :func:`fit`, with two held-out splits: by run (the outputs of one augment run held
    out) and by identity (every output of one source identity held out; the rounds all re-pose the
    README main job's 120 images, 13 identities, so a run split shares people with its training
    rows). Needs the rounds' runs under ``runs/``. Writes ``benchmarks/results/defect_risk-embed.md``."""
    from sklearn.metrics import roc_auc_score

    from posegen.data.images import read_image
    from posegen.filter.identity import load_embedder

    t = pd.read_csv(TABLE)
    missing = [f"{r}/{p}" for r, p in zip(t["run"], t["path"]) if not (REPO / r / p).is_file()]
    if missing:
        sys.exit(f"{len(missing)} labelled outputs are gone (e.g. {missing[0]}): rerun the rounds' augment runs")
    emb = load_embedder(weights)
    out = emb.embed([read_image(REPO / r / p) for r, p in zip(t["run"], t["path"])])
    src = emb.embed([read_image(source_dir / (p.rsplit("_pg", 1)[0] + Path(p).suffix)) for p in t["path"]])
    out, src = (np.asarray(e, np.float64) / np.linalg.norm(e, axis=1, keepdims=True) for e in (out, src))
    y = t["defect"].to_numpy(bool)
    inputs = {"pose features of `fit` (a missing one as 0)": np.nan_to_num(t[FEATURES].to_numpy(np.float64)),
              "output embedding": out, "output - source embedding": out - src}
    splits = {"run": t["run"].to_numpy(), "identity": t["path"].str[:4].to_numpy()}
    cmd = "python benchmarks/defect_risk.py embed" + (f" --c {c:g}" if c != 0.01 else "")
    lines = ["# Can an appearance model learn the blind labels?\n", f"`{cmd}` at commit {commit()}\n",
             f"{len(t)} labelled kept outputs ({int(y.sum())} with a visible defect), {len(set(splits['run']))} runs, "
             f"{len(set(splits['identity']))} source identities; OSNet x0.25 MSMT17 embeddings, logistic regression "
             f"(C = {c:g}) on standardised inputs. ROC AUC of the held-out predictions:\n",
             "| input | held out by run | held out by identity |", "| --- | ---: | ---: |"]
    aucs = {}
    for name, x in inputs.items():
        row = {}
        for split, g in splits.items():
            held = np.zeros(len(t))
            for v in np.unique(g):
                te = g == v
                held[te] = _model(c).fit(x[~te], y[~te]).decision_function(x[te])
            row[split] = float(roc_auc_score(y, held))
        aucs[name] = row
        lines.append(f"| {name} | {row['run']:.3f} | {row['identity']:.3f} |")
    text = "\n".join(lines)
    print(text)
    atomic_write_text(RESULTS / "defect_risk-embed.md", text + "\n")
    atomic_write_json(RESULTS / "defect_risk-embed.json", dict(command=cmd, commit=commit(), rows=len(t), c=c, auc=aucs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("table", help="gather the labelled rows into benchmarks/labels/defect_features.csv")
    f = sub.add_parser("fit", help="fit and test the risk model")
    f.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    k = sub.add_parser("compare", help="kept outputs of augment runs under the fitted risk")
    k.add_argument("runs", type=Path, nargs="+")
    r = sub.add_parser("repaint", help="scores of the repainted region against the labels of earlier rounds")
    r.add_argument("tags", nargs="+", help="the --tag of earlier blind_defects.py score runs")
    r.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "cuhk03-detected" / "detected" / "train",
                   help="the folder the runs' sources came from")
    e = sub.add_parser("embed", help="OSNet embeddings of the labelled outputs against the labels")
    e.add_argument("--weights", type=Path, default=REPO.parent / "shared" / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx")
    e.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "cuhk03-detected" / "detected" / "train",
                   help="the folder the runs' sources came from")
    e.add_argument("--c", type=float, default=0.01, help="inverse L2 strength of the logistic regression")
    args = ap.parse_args()
    if args.cmd == "table":
        table()
    elif args.cmd == "compare":
        compare(args.runs)
    elif args.cmd == "repaint":
        repaint(args.tags, args.root)
    elif args.cmd == "embed":
        embed(args.weights, args.root, args.c)
    else:
        fit(args.c)


if __name__ == "__main__":
    main()
