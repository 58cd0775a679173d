"""Visible defects in kept outputs, judged by eye without knowing which run made them.

Two ``augment`` outputs (e.g. the README main job before and after a change) are compared the way a
user would look at ``report.html``: ``n`` kept synthetic images of each, drawn at random (seeded),
are shuffled together and shown as numbered source | output pairs on sheets, with no sign of which
run made which. A person marks the numbers that show a visible defect (a hole, a torn contour, a
smeared or doubled limb or bag) in a labels file; ``score`` then unblinds and prints, per run, the
share with a defect, and per group of limb motion (:func:`posegen.pose.keypoints.joint_motion` of
the chosen target pose placed on the source, before ``augment.limit_limb_motion`` moves its limbs:
the quantity ``augment.max_arm_motion`` / ``max_leg_motion`` rank targets by), with Fisher's exact
test (:func:`scipy.stats.fisher_exact`).

Usage::

    .venv/bin/python benchmarks/blind_defects.py sheets RUN_A RUN_B --n 45 --seed 7 --out DIR
    # look at DIR/sheet_*.png, write the defective numbers (spaces, commas or lines; '#' comments) to LABELS
    .venv/bin/python benchmarks/blind_defects.py score DIR --labels LABELS [--tag TAG]

``within RUN...`` prints the share of each run's generated outputs whose chosen target lies within both
limb-motion limits; ``scores TAG...`` compares the filter's scores of the outputs labelled in earlier
rounds, defective against not.

``sheets`` writes ``DIR/key.csv`` (which run made which number: do not read it before labelling)
and ``DIR/sheet_*.png``. ``score`` prints a table and writes
``benchmarks/results/blind_defects[-TAG].{json,md}``. Only sources whose identity (``pid``) is at
least ``--min-pid`` are drawn, and none listed in the ``--skip`` key files, so that images looked at
earlier can be left out; with ``--changed``, only the rows (source, target number) whose outputs
differ between the two runs are drawn (another target pose, or other pixels; where two runs share
most rows, their difference lies there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from _common import RESULTS, SHARED, commit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from posegen._io import atomic_write_json, atomic_write_text  # noqa: E402

TRAIN = SHARED / "data" / "cuhk03-detected" / "detected" / "train"
PER_ROW, ROWS, W, H = 6, 3, 100, 200


def _kept(run: Path, min_pid: int) -> pd.DataFrame:
    m = pd.read_parquet(run / "manifest.parquet")
    return m[m["synthetic"] & m["kept"] & (m["pid"] >= min_pid)]


def _changed(a: Path, b: Path) -> set[tuple[str, int]]:
    """The ``(source, k)`` rows whose outputs differ between the two runs: another target pose, or
    the same one re-posed into other pixels (the written files' bytes differ), or written by one
    run only."""
    ma, mb = (pd.read_parquet(r / "manifest.parquet") for r in (a, b))
    m = ma[ma["k"] > 0].merge(mb[mb["k"] > 0], on=["source", "k"], suffixes=("_a", "_b"))

    def data(run: Path, path: str) -> bytes | None:
        return (run / path).read_bytes() if path and (run / path).is_file() else None

    differ = [ta != tb or data(a, pa) != data(b, pb)
              for ta, tb, pa, pb in zip(m["target_pose_source_a"], m["target_pose_source_b"], m["path_a"], m["path_b"])]  # fmt: skip
    m = m[differ]
    return set(zip(m["source"], m["k"].astype(int)))


def sheets(a: Path, b: Path, n: int, seed: int, out: Path, root: Path, min_pid: int, skip: list[Path],
           changed: bool = False) -> None:  # fmt: skip
    """Write the shuffled, numbered sheets and the key (with ``changed``, only rows whose outputs
    differ between the two runs are drawn, :func:`_changed`)."""
    from PIL import Image, ImageDraw

    seen = set()
    for key in skip:
        k = pd.read_csv(key)
        seen |= set(zip(k["run"], k["path"]))
    differ = _changed(a, b) if changed else None
    rows = []
    for tag, run in (("A", a), ("B", b)):
        k = _kept(run, min_pid)
        k = k[[(str(run), p) not in seen for p in k["path"]]]
        if differ is not None:
            print(f"{tag}: {sum((s, int(j)) in differ for s, j in zip(k['source'], k['k']))} kept rows with a changed output, of {len(k)} kept")
            k = k[[(s, int(j)) in differ for s, j in zip(k["source"], k["k"])]]
        k = k.sample(min(n, len(k)), random_state=seed)
        rows += [dict(run=str(run), tag=tag, path=p, source=s) for p, s in zip(k["path"], k["source"])]
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "key.csv", df.to_csv(index_label="id"))
    per = PER_ROW * ROWS
    for sh in range(0, len(df), per):
        part = df.iloc[sh : sh + per]
        sheet = Image.new("RGB", (PER_ROW * (2 * W + 10), ROWS * (H + 14)), "white")
        draw = ImageDraw.Draw(sheet)
        for j, (i, r) in enumerate(part.iterrows()):
            x0, y0 = (j % PER_ROW) * (2 * W + 10), (j // PER_ROW) * (H + 14)
            sheet.paste(Image.open(root / r["source"]).convert("RGB").resize((W, H), Image.BICUBIC), (x0, y0))
            sheet.paste(Image.open(Path(r["run"]) / r["path"]).convert("RGB").resize((W, H), Image.BICUBIC), (x0 + W, y0))
            draw.text((x0 + 2, y0 + H + 1), f"#{i}", fill="black")
        sheet.save(out / f"sheet_{sh // per}.png")
    print(f"{len(df)} images on {(len(df) + per - 1) // per} sheets in {out}")


def _motions(run: Path, paths) -> list[tuple[float, float]]:
    """(arm, leg) motion of each output's target placed on its source, in source torso lengths
    (before any ``augment.limit_limb_motion``), for ``paths`` of ``run``'s manifest."""
    from posegen.pose.keypoints import ARM_JOINTS, LEG_JOINTS, joint_motion
    from posegen.repose.warp import align_pose, view_matched_source

    m = pd.read_parquet(run / "manifest.parquet").set_index("path")
    poses = pd.read_parquet(run / ".posegen" / "poses.parquet").set_index("path")
    rows = m.loc[list(paths)]
    if not len(rows):
        return []
    sk = np.stack([np.asarray(poses.loc[s, "keypoints"], np.float32).reshape(17, 3) for s in rows["source"]])
    tk = np.stack([np.asarray(poses.loc[t, "keypoints"], np.float32).reshape(17, 3) for t in rows["target_pose_source"]])
    placed = align_pose(tk, sk)
    paired = view_matched_source(sk, placed).numpy()
    return list(zip(joint_motion(paired, placed, ARM_JOINTS).tolist(), joint_motion(paired, placed, LEG_JOINTS).tolist()))


def within(runs: list[Path], max_arm: float, max_leg: float) -> None:
    """Print, per run, the share of generated outputs whose chosen target lies within both
    limb-motion limits (placed on the source, before any limb is moved back), and the kept ones
    within and beyond; writes ``benchmarks/results/blind_defects-within.md``."""
    lines = [f"| run | generated | within both limits (arms <= {max_arm:g}, legs <= {max_leg:g}) | kept within | kept beyond |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for run in runs:
        m = pd.read_parquet(run / "manifest.parquet")
        gen = m[m["synthetic"] & (m["k"] > 0) & (m["path"] != "")]
        mot = np.array(_motions(run, gen["path"]), dtype=np.float64).reshape(-1, 2)
        ok = ~(mot[:, 0] > max_arm) & ~(mot[:, 1] > max_leg)  # NaN (no shared joint) is within
        kept = gen["kept"].to_numpy(bool)
        lines.append(f"| {run} | {len(gen)} | {ok.mean():.0%} | {int((ok & kept).sum())} | {int((~ok & kept).sum())} |")
    cmd = "python benchmarks/blind_defects.py within " + " ".join(map(str, runs))
    text = "\n".join(["# Generated outputs whose target lies within the limb-motion limits\n", f"`{cmd}` at commit {commit()}\n", *lines])
    print(text)
    atomic_write_text(RESULTS / "blind_defects-within.md", text + "\n")


#: Manifest scores compared between the outputs marked defective and the others (:func:`scores`).
SCORE_COLUMNS = ("oks", "identity_sim", "identity_sim_others", "source_ssim", "source_pose_oks", "sharpness_ratio",
                 "foreign_fraction", "invented_fraction")  # fmt: skip


def scores(tags: list[str]) -> None:
    """The filter's scores of the labelled outputs of earlier rounds (``blind_defects-TAG.json``
    keys joined with their runs' manifests): median among the defective and the other outputs and
    the Mann-Whitney U test's p, per score. Writes ``benchmarks/results/blind_defects-scores.md``."""
    from scipy.stats import mannwhitneyu

    frames = []
    for tag in tags:
        key = pd.DataFrame(json.loads((RESULTS / f"blind_defects-{tag}.json").read_text())["key"])
        for run, part in key.groupby("run"):
            m = pd.read_parquet(Path(run) / "manifest.parquet").set_index("path")
            frames.append(part.join(m[list(SCORE_COLUMNS)], on="path"))
    k = pd.concat(frames, ignore_index=True)
    cmd = "python benchmarks/blind_defects.py scores " + " ".join(tags)
    lines = ["# The filter's scores of outputs labelled blind\n", f"`{cmd}` at commit {commit()}\n",
             f"{len(k)} labelled kept outputs, {int(k['defect'].sum())} with a visible defect.\n",
             "| score | median, defect | median, no defect | Mann-Whitney p |", "| --- | ---: | ---: | ---: |"]
    for c in SCORE_COLUMNS:
        a, b = k.loc[k["defect"], c].astype(float).dropna(), k.loc[~k["defect"], c].astype(float).dropna()
        p = float(mannwhitneyu(a, b).pvalue) if len(a) and len(b) else float("nan")
        lines.append(f"| {c} | {a.median():.3f} | {b.median():.3f} | {p:.4f} |")
    text = "\n".join(lines)
    print(text)
    atomic_write_text(RESULTS / "blind_defects-scores.md", text + "\n")


def score(out: Path, labels: Path, tag: str | None, max_arm: float, max_leg: float) -> None:
    """Unblind: defect shares per run and per limb-motion group."""
    from scipy.stats import fisher_exact

    key = pd.read_csv(out / "key.csv")
    text = "\n".join(line.split("#", 1)[0] for line in labels.read_text().splitlines())  # "#" starts a comment
    bad = {int(t) for t in text.replace(",", " ").split()}
    unknown = bad - set(key["id"])
    if unknown:
        raise SystemExit(f"labels name numbers that are not on the sheets: {sorted(unknown)}")
    key["defect"] = key["id"].isin(bad)
    mot = {}
    for run, part in key.groupby("run"):
        mot.update(zip(zip(part["run"], part["path"]), _motions(Path(run), part["path"])))
    key["arm_motion"] = [mot[(r, p)][0] for r, p in zip(key["run"], key["path"])]
    key["leg_motion"] = [mot[(r, p)][1] for r, p in zip(key["run"], key["path"])]
    key["within"] = ~(key["arm_motion"] > max_arm) & ~(key["leg_motion"] > max_leg)

    def table(by: str) -> list[dict]:
        g = key.groupby(by)["defect"].agg(["sum", "count"])
        return [dict(group=str(i), defects=int(r["sum"]), looked_at=int(r["count"]), share=float(r["sum"] / r["count"])) for i, r in g.iterrows()]

    runs, groups = table("run"), table("within")
    p_runs = float(fisher_exact(pd.crosstab(key["run"], key["defect"]).reindex(columns=[False, True], fill_value=0).values)[1])
    p_groups = float(fisher_exact(pd.crosstab(key["within"], key["defect"]).reindex(index=[False, True], columns=[False, True], fill_value=0).values)[1])
    name = "blind_defects" + (f"-{tag}" if tag else "")
    cmd = f"python benchmarks/blind_defects.py score {out} --labels {labels}" + (f" --tag {tag}" if tag else "")
    cmd += (f" --max-arm {max_arm:g}" if max_arm != 0.25 else "") + (f" --max-leg {max_leg:g}" if max_leg != 0.3 else "")
    counts = ", ".join(f"{r['looked_at']} of {r['group']}" for r in runs)
    lines = ["# Visible defects in kept outputs, judged blind\n", f"`{cmd}` at commit {commit()}\n",
             f"{len(key)} kept outputs ({counts}), shuffled on numbered sheets; "
             f"defect = a hole, a torn contour, a smeared or doubled limb or bag, marked by eye before unblinding.\n",
             "| run | defects | looked at | share |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['group']} | {r['defects']} | {r['looked_at']} | {r['share']:.0%} |" for r in runs]
    lines += [f"\nFisher's exact test, run vs defect: p = {p_runs:.3f}\n",
              f"By limb motion of the chosen target pose placed on the source, before any `augment.limit_limb_motion` "
              f"(arms <= {max_arm:g} and legs <= {max_leg:g} source torso lengths = within):\n",
              "| within the limits | defects | looked at | share |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['group']} | {r['defects']} | {r['looked_at']} | {r['share']:.0%} |" for r in groups]
    lines += [f"\nFisher's exact test, within vs defect: p = {p_groups:.3f}\n"]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(RESULTS / f"{name}.md", text + "\n")
    atomic_write_json(RESULTS / f"{name}.json", dict(command=cmd, commit=commit(), runs=runs, p_runs=p_runs, by_limb_motion=groups,
                                                      p_limb_motion=p_groups, max_arm_motion=max_arm, max_leg_motion=max_leg,
                                                      labels=sorted(bad), key=json.loads(key.to_json(orient="records"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sheets", help="write shuffled, numbered sheets of two runs' kept outputs")
    s.add_argument("run_a", type=Path)
    s.add_argument("run_b", type=Path)
    s.add_argument("--n", type=int, default=45, help="kept outputs drawn from each run")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--min-pid", type=int, default=0, help="draw only sources with pid >= this")
    s.add_argument("--root", type=Path, default=TRAIN, help="the folder the runs' sources came from")
    s.add_argument("--changed", action="store_true", help="draw only rows whose outputs differ between the runs")
    s.add_argument("--skip", type=Path, nargs="*", default=[], help="key.csv files of earlier sheets: their images are not drawn again")
    s.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("score", help="unblind a labelled set of sheets")
    c.add_argument("out", type=Path)
    c.add_argument("--labels", type=Path, required=True, help="the numbers marked as defective")
    c.add_argument("--tag", default=None)
    c.add_argument("--max-arm", type=float, default=0.25)
    c.add_argument("--max-leg", type=float, default=0.3)
    w = sub.add_parser("within", help="share of generated outputs whose target lies within both limb-motion limits")
    w.add_argument("runs", type=Path, nargs="+")
    w.add_argument("--max-arm", type=float, default=0.25)
    w.add_argument("--max-leg", type=float, default=0.3)
    k = sub.add_parser("scores", help="the filter's scores of outputs labelled in earlier rounds, defect vs none")
    k.add_argument("tags", nargs="+", help="the --tag of earlier score runs (their results files hold the keys)")
    args = ap.parse_args()
    if args.cmd == "sheets":
        sheets(args.run_a, args.run_b, args.n, args.seed, args.out, args.root, args.min_pid, args.skip, args.changed)
    elif args.cmd == "score":
        score(args.out, args.labels, args.tag, args.max_arm, args.max_leg)
    elif args.cmd == "within":
        within(args.runs, args.max_arm, args.max_leg)
    else:
        scores(args.tags)


if __name__ == "__main__":
    main()
