"""posegen eval-downstream: a small real torchreid run on CUHK03, the leak check, fractions, seeds, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DETECTED = SHARED / "data" / "cuhk03-detected" / "detected"

pytest.importorskip("torchreid", reason="eval-downstream needs torchreid==0.2.5 (posegen's downstream dependencies)")

from posegen.downstream import (  # noqa: E402
    LeakError,
    check_leaks,
    evaluate_downstream,
    load_init_weights,
    load_real,
    load_synthetic,
    subsample_real,
)

# a few identities, one epoch, tiny images: every output file in seconds on 2 CPU cores
SMALL = dict(max_train_pids=6, max_test_pids=10, epochs=1, height=64, width=32, batch_size=8, device="cpu", threads=1)


@pytest.fixture(scope="module")
def detected() -> Path:
    if not (DETECTED / "train").is_dir() or not (DETECTED / "val").is_dir():
        pytest.skip(f"needs real CUHK03 at {DETECTED} (the ../shared folder beside the repository is absent)")
    return DETECTED


@pytest.fixture(scope="module")
def small_run(detected, tmp_path_factory):
    out = tmp_path_factory.mktemp("downstream") / "report"
    result = evaluate_downstream(detected, None, out, synthetic="flip", fractions=(0.5, 1.0), seeds=(0,), **SMALL)
    return out, result


def test_small_real_run_writes_every_file_with_sane_numbers(small_run):
    out, result = small_run
    for name in ("results.json", "runs.csv", "summary.csv", "summary.md", "cmc.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.rglob("*.tmp"))
    with Image.open(out / "cmc.png") as im:
        assert im.format == "PNG" and im.width > 100
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["runs"]) == 2 * 3 and len(saved["summary"]) == 2 * 3
    assert saved["config"]["pretrained"] is False and saved["protocol"]["n_test_pids"] == 10
    assert saved["protocol"]["n_query"] > 0 and saved["protocol"]["n_gallery"] > 0
    for r in saved["runs"]:
        assert 0.0 <= r["mAP"] <= 1.0
        cmc = np.asarray(r["cmc"])
        assert len(cmc) == 50 and np.all(np.diff(cmc) >= -1e-7) and 0.0 <= cmc[0] and cmc[-1] <= 1.0 + 1e-7
        assert r["rank1"] <= r["rank5"] <= r["rank10"]
        assert r["steps"] >= 1 and np.isfinite(r["final_loss"])
        assert (out / "logs" / f"fraction{r['fraction']:g}-seed{r['seed']}-{r['arm']}.log").is_file()
    runs = pd.DataFrame(saved["runs"])
    for f, g in runs.groupby("fraction"):
        by = g.set_index("arm")
        # the two control arms add the same number of images; the flip stand-in adds one per kept real image
        assert by.loc["synthetic", "n_extra"] == by.loc["duplicate", "n_extra"] == by.loc["real", "n_real"]
        assert by.loc["real", "n_extra"] == 0 and by.loc["real", "n_pids"] == 6
    assert runs.loc[runs["fraction"] == 0.5, "n_real"].iloc[0] < runs.loc[runs["fraction"] == 1.0, "n_real"].iloc[0]
    summary = pd.read_csv(out / "summary.csv")
    assert {"delta_mAP_mean", "mAP_mean", "mAP_std", "rank1_mean"} <= set(summary.columns)
    md = (out / "summary.md").read_text()
    assert "| 1.00 | synthetic |" in md and "Δ mAP" in md
    # the stand-in synthetic images are flipped copies of training images only
    syn = pd.read_parquet(out / "synthetic-flip" / "manifest.parquet")
    assert syn["source"].str.startswith("train/").all() and len(syn) == runs["n_real"].max()


def test_same_seed_reproduces(small_run, detected, tmp_path):
    _, first = small_run
    again = evaluate_downstream(detected, None, tmp_path / "again", arms=("real",), fractions=(1.0,), seeds=(0,), **SMALL)
    a = next(r for r in first["runs"] if r["arm"] == "real" and r["fraction"] == 1.0)
    b = again["runs"][0]
    assert b["mAP"] == pytest.approx(a["mAP"], abs=1e-6)
    np.testing.assert_allclose(b["cmc"], a["cmc"], atol=1e-6)
    assert b["final_loss"] == pytest.approx(a["final_loss"], abs=1e-5)


def test_fractions_keep_one_image_per_pid_and_are_seeded(detected):
    train = load_real(detected).train
    n_pids = train["pid"].nunique()
    for fraction in (0.05, 0.2, 0.5):
        kept = subsample_real(train, fraction, seed=0)
        assert kept["pid"].nunique() == n_pids  # >= 1 image per identity
        assert kept["pid"].value_counts().min() >= 1
        per_pid = train["pid"].value_counts()
        assert len(kept) == sum(max(1, int(np.floor(fraction * n + 0.5))) for n in per_pid)
        assert kept.equals(subsample_real(train, fraction, seed=0))  # seeded
        assert not kept.equals(subsample_real(train, fraction, seed=1))
    small, large = subsample_real(train, 0.2, 3), subsample_real(train, 0.4, 3)
    assert set(small["path"]) <= set(large["path"])  # nested
    assert len(subsample_real(train, 1.0, 0)) == len(train)
    with pytest.raises(ValueError, match="fraction"):
        subsample_real(train, 0.0, 0)


def _plant(out: Path, rows: list[dict]) -> None:
    """Add rows (and image files) to an augment-style manifest in ``out``."""
    manifest = pd.read_parquet(out / "manifest.parquet")
    for r in rows:
        src = out / manifest["path"].iloc[0]
        (out / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, out / r["path"])
    planted = pd.DataFrame([{**manifest.iloc[0].to_dict(), **r} for r in rows])
    pd.concat([manifest, planted], ignore_index=True).to_parquet(out / "manifest.parquet", index=False)


def test_leak_check_fails_on_a_planted_leak(small_run, detected, tmp_path):
    out, _ = small_run
    aug = tmp_path / "aug"
    shutil.copytree(out / "synthetic-flip", aug)
    # clean copy: passes
    real = load_real(detected, max_train_pids=6, max_test_pids=10)
    check_leaks(load_synthetic(aug, real), real)
    # a synthetic image made from a query image (val/ view A), labelled as training data
    _plant(aug, [{"path": "val/0000_00_pg00.jpg", "source": "val/0000_00.jpg", "pid": 0, "split": "train"}])
    with pytest.raises(LeakError, match="source is a query/gallery image"):
        evaluate_downstream(detected, aug, tmp_path / "r", **SMALL)
    assert not (tmp_path / "r" / "results.json").exists()

    aug2 = tmp_path / "aug2"
    shutil.copytree(out / "synthetic-flip", aug2)
    _plant(aug2, [{"path": "train/0001_00_pg07.jpg", "source": "train/0001_00.jpg", "pid": 2}])  # wrong identity
    with pytest.raises(LeakError, match="pid differs"):
        evaluate_downstream(detected, aug2, tmp_path / "r2", **SMALL)

    # a synthetic image whose source was dropped by --real-fraction
    syn = load_synthetic(out / "synthetic-flip", real)
    kept = subsample_real(real.train, 0.5, seed=0)
    with pytest.raises(LeakError, match="dropped"):
        check_leaks(syn, real, kept["path"])
    check_leaks(syn[syn["real_path"].isin(set(kept["path"]))], real, kept["path"])


def test_leak_check_test_identity_in_a_shared_pid_space(tmp_path):
    """Market-1501 numbers train and test identities in one space: a test pid in training is a leak."""
    root = tmp_path / "market"
    names = {"bounding_box_train": ["0002_c1s1_000001_01.jpg", "0002_c2s1_000002_01.jpg"],
             "query": ["0005_c1s1_000003_01.jpg"], "bounding_box_test": ["0005_c2s1_000004_01.jpg"]}  # fmt: skip
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for n in files:
            Image.new("RGB", (64, 128), (90, 120, 150)).save(root / folder / n)
    real = load_real(root)
    assert real.shared_pid_space
    syn = pd.DataFrame({"path": ["x_pg00.jpg"], "pid": [5], "camid": [0], "split": ["train"],
                        "source": ["bounding_box_train/0002_c1s1_000001_01.jpg"],
                        "real_path": ["bounding_box_train/0002_c1s1_000001_01.jpg"]})  # fmt: skip
    with pytest.raises(LeakError, match="pid is a query/gallery identity"):
        check_leaks(syn, real)
    with pytest.raises(LeakError, match="source not found"):
        check_leaks(syn.assign(pid=2, real_path=""), real)
    check_leaks(syn.assign(pid=2), real)


def test_init_weights_loads_a_local_checkpoint(tmp_path):
    import torch
    from torchreid.reid import models

    src = models.build_model("osnet_x0_25", num_classes=6, pretrained=False)
    torch.save({"state_dict": src.state_dict(), "epoch": 1}, tmp_path / "ckpt.pth")
    dst = models.build_model("osnet_x0_25", num_classes=4, pretrained=False)
    info = load_init_weights(dst, tmp_path / "ckpt.pth")
    assert info["loaded"] > 100 and any("classifier" in k for k in info["skipped"])
    assert torch.equal(dst.state_dict()["conv1.conv.weight"], src.state_dict()["conv1.conv.weight"])
    torch.save({"nothing": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="matches"):
        load_init_weights(dst, tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        load_init_weights(dst, tmp_path / "missing.pth")


def test_cli(detected, tmp_path):
    from posegen.cli.downstream import eval_downstream_cmd

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("eval-downstream")(eval_downstream_cmd)
    runner = CliRunner()
    base = ["eval-downstream", "--data", str(detected), "--max-train-pids", "4", "--max-test-pids", "5",
            "--epochs", "1", "--height", "64", "--width", "32", "--batch-size", "8", "--device", "cpu", "--threads", "1"]  # fmt: skip
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o"), "--arms", "real", "--seeds", "0", "--loss", "triplet"])
    assert res.exit_code == 0, res.output
    assert "mAP" in res.output and (tmp_path / "o" / "summary.md").is_file()
    assert "--loss triplet" in json.loads((tmp_path / "o" / "results.json").read_text())["command"]
    # the synthetic arms without a synthetic set: one clear line, exit status 2
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "--synthetic flip" in res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o3"), "--real-fraction", "0.5,x"])
    assert res.exit_code == 2 and "real-fraction" in res.output
