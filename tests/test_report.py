"""The visual report: report.html references existing thumbnails only, lists kept and rejected rows
(capped, deterministic), and the score plot (``.posegen/report/scores.png``) is a real PNG. Built on a small synthetic augment
output folder (no model, no ../shared) so it runs in seconds."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from posegen.augment import MANIFEST_COLUMNS, synthetic_name
from posegen.pose.formats import new_poses_frame, write_poses
from posegen.recipe import load_recipe
from posegen.report import PLOT_NAME, REPORT_NAME, THUMB_DIR, sample_rows, skeleton_image, write_report

W, H = 40, 96


def _pose(dx: float = 0.0) -> np.ndarray:
    """An upright COCO-17 stick figure in a 40 x 96 image."""
    xy = [
        (20, 10), (18, 8), (22, 8), (16, 9), (24, 9), (13, 22), (27, 22), (11, 38), (29, 38), (10, 52),
        (30, 52), (15, 55), (25, 55), (15, 72), (25, 72), (15, 90), (25, 90),
    ]  # fmt: skip
    kp = np.ones((17, 3), dtype=np.float32)
    kp[:, :2] = np.array(xy, dtype=np.float32) + (dx, 0.0)
    return kp


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for k, v in attrs:
            if k in ("src", "href"):
                self.srcs.append(v)


def _fake_run(out: Path, n_sources: int = 6, k: int = 3) -> pd.DataFrame:
    """An augment-like output folder: real images, kept outputs, rejected outputs, a pose bank."""
    rng = np.random.default_rng(0)
    rows, poses = [], []
    sources = [f"{p:04d}_00.jpg" for p in range(n_sources)]
    for i, src in enumerate(sources):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(out / src)
        poses.append(dict(path=src, width=W, height=H, keypoints=_pose(i % 3 - 1.0), status="ok", reason=""))
        base = dict(zip(MANIFEST_COLUMNS, [np.nan] * len(MANIFEST_COLUMNS)))
        rows.append({**base, "path": src, "pid": i, "camid": 0, "split": "train", "synthetic": False, "source": src,
                     "k": 0, "target_pose_source": "", "seed": -1, "n_keypoints": -1, "kept": True, "reason": "",
                     "width": W, "height": H})  # fmt: skip
    for i, src in enumerate(sources):
        for j in range(1, k + 1):
            kept = (i + j) % 2 == 0
            name = synthetic_name(src, j)
            rel = name if kept else f".posegen/rejected/{name}"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(out / rel)
            rows.append({
                "path": rel, "pid": i, "camid": 0, "split": "train", "synthetic": True, "source": src, "k": j,
                "target_pose_source": sources[(i + j) % n_sources], "seed": 7, "oks": rng.uniform(0.3, 1),
                "pck": rng.uniform(0, 1), "std": 0.2, "n_keypoints": 15, "identity_sim": rng.uniform(0.4, 0.9),
                "identity_sim_others": rng.uniform(0.4, 0.9), "source_ssim": rng.uniform(0, 0.5),
                "source_pose_oks": rng.uniform(0, 0.7), "prior_energy": rng.normal(1, 0.5), "kept": kept,
                "reason": "" if kept else "low pose fidelity (OKS < 0.5)", "width": W, "height": H,
            })  # fmt: skip
    # one row rejected before generation (no image) and one unusable source
    rows.append({**rows[-1], "path": "", "k": k + 1, "reason": "implausible target pose", "kept": False,
                 "oks": np.nan, "identity_sim": np.nan, "prior_energy": 9.0, "width": -1, "height": -1})  # fmt: skip
    rows.append({**rows[-1], "k": 0, "target_pose_source": "", "reason": "source pose has 3 keypoints (< 8)"})
    write_poses(new_poses_frame(poses), out / ".posegen" / "poses.parquet")
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


@pytest.fixture()
def fake(tmp_path):
    out = tmp_path / "out"
    (out / ".posegen").mkdir(parents=True)
    return out, _fake_run(out)


def test_report_html_and_plot(fake):
    out, manifest = fake
    path = write_report(out, manifest, load_recipe("tiny"), prior_threshold=2.5, rows=200, notes=["identity checks skipped"])
    assert path == out / REPORT_NAME and path.is_file()
    text = path.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    assert "script" not in parser.tags and not re.search(r"https?://", text)  # no JS, no network resources
    thumbs = [s for s in parser.srcs if s != PLOT_NAME]
    assert thumbs and all(s.startswith(THUMB_DIR + "/") for s in thumbs)
    for s in parser.srcs:  # every referenced file exists, relative to OUT
        assert (out / s).is_file(), s
    syn = manifest[manifest["synthetic"] & (manifest["k"] > 0)]
    n_kept, n_rej = int(syn["kept"].sum()), int((~syn["kept"]).sum())
    assert f"Kept: {n_kept} shown of {n_kept}" in text and f"Rejected: {n_rej} shown of {n_rej}" in text
    assert "low pose fidelity (OKS &lt; 0.5)" in text and "implausible target pose" in text
    assert "not generated" in text and "identity checks skipped" in text
    # one source, one skeleton and one output thumbnail per generated row (sources shared)
    assert len(list((out / THUMB_DIR).glob("out-*.png"))) == int((syn["path"] != "").sum())
    png = out / PLOT_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.width > 800 and im.height > 400


def test_report_caps_rows_and_drops_stale_thumbnails(fake):
    out, manifest = fake
    write_report(out, manifest, load_recipe("tiny"), rows=200)
    before = set(p.name for p in (out / THUMB_DIR).iterdir())
    write_report(out, manifest, load_recipe("tiny"), rows=4)
    text = (out / REPORT_NAME).read_text(encoding="utf-8")
    assert re.search(r"Kept: 2 shown of \d+", text) and re.search(r"Rejected: 2 shown of \d+", text)
    after = set(p.name for p in (out / THUMB_DIR).iterdir())
    assert after < before  # thumbnails of rows no longer shown are removed
    parser = _Links()
    parser.feed(text)
    assert {s.split("/")[-1] for s in parser.srcs} == after  # the thumbnails shown and the score plot


def test_sample_rows_is_deterministic_and_balanced(fake):
    _, manifest = fake
    syn = manifest[manifest["synthetic"] & (manifest["k"] > 0)]
    kept, rej = sample_rows(syn, 5, seed=1)
    assert len(kept) + len(rej) == 5 and len(kept) >= 2 and len(rej) >= 2
    again = sample_rows(syn, 5, seed=1)
    assert kept.equals(again[0]) and rej.equals(again[1])
    only_kept = syn[syn["kept"]]
    k2, r2 = sample_rows(only_kept, 5)
    assert len(k2) == 5 and len(r2) == 0  # one side empty: the other gets the whole budget


def test_skeleton_image_draws_the_pose():
    img = skeleton_image(_pose(), (W, H))
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert img[22, 13].max() > 200  # a joint (left shoulder, x=13 y=22) is white
    assert img[0, 0].max() == 0 and img[H - 1, 0].max() == 0  # background stays black
    kp = _pose()
    kp[:, 2] = 0.0
    assert skeleton_image(kp, (W, H)).max() == 0  # absent joints are not drawn


def test_report_draws_the_placed_target_pose(fake):
    """With ``place_target`` (``augment`` passes the default model's :func:`placed_target`), the
    target column shows the pose the model was asked for: the function gets the source's and the
    target's bank poses, and its result, in source pixels, is what is drawn."""
    out, manifest = fake
    from posegen.pose.formats import read_poses

    bank = read_poses(out / ".posegen" / "poses.parquet").set_index("path")
    calls = []

    def place(source_kp, target_kp):
        calls.append((source_kp.copy(), target_kp.copy()))
        kp = np.array(source_kp, np.float32)
        kp[:, 2] = 0.0
        kp[5] = (30.0, 70.0, 1.0)  # one joint only, where no bank pose has one
        return kp

    write_report(out, manifest, load_recipe("tiny"), rows=200, place_target=place)
    shown = manifest[manifest["synthetic"] & (manifest["k"] > 0)]  # generated or not: each row's target is drawn
    assert len(calls) == len(shown)  # one placement per row
    def pair(s_kp, t_kp):
        return np.asarray(s_kp, np.float32).tobytes(), np.asarray(t_kp, np.float32).tobytes()

    want = [pair(bank.loc[s, "keypoints"], bank.loc[t, "keypoints"]) for s, t in zip(shown["source"], shown["target_pose_source"])]
    assert sorted(pair(*c) for c in calls) == sorted(want)  # each row's source and target bank poses
    poses = sorted((out / THUMB_DIR).glob("pose-*.png"))
    assert poses
    for p in poses:
        with Image.open(p) as im:
            g = np.asarray(im.convert("L"), dtype=np.float32)
        y, x = np.unravel_index(np.argmax(g), g.shape)  # the one joint drawn, scaled to the thumbnail
        assert abs(y / g.shape[0] - 70 / H) < 0.05 and abs(x / g.shape[1] - 30 / W) < 0.08
        assert g[: g.shape[0] // 2].max() == 0  # nothing of the bank pose (head, shoulders) is drawn
