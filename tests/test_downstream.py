"""posegen eval-downstream: a small real torchreid run on CUHK03 (pretrained start, four arms), the leak checks, fractions, seeds, the ONNX conversion, CLI."""

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
    check_generator_leak,
    check_leaks,
    evaluate_downstream,
    load_init_weights,
    load_real,
    load_synthetic,
    subsample_real,
)
from posegen.repose.pipeline import default_model_dir  # noqa: E402
from posegen.repose.provenance import file_digest, read_provenance, write_provenance  # noqa: E402

# a few identities, one epoch, tiny images: every output file in seconds on 2 CPU cores
SMALL = dict(max_train_pids=6, max_test_pids=10, epochs=1, height=64, width=32, batch_size=8, device="cpu", threads=1)


@pytest.fixture(scope="module")
def detected() -> Path:
    if not (DETECTED / "train").is_dir() or not (DETECTED / "val").is_dir():
        pytest.skip(f"needs real CUHK03 at {DETECTED} (the ../shared folder beside the repository is absent)")
    return DETECTED


def make_augment_out(detected: Path, out: Path, pids=range(6), card_from: Path | None = None) -> Path:
    """An augment-style OUT made from CUHK03 ``train/``: one synthetic image per real image of ``pids``
    (a real image shifted by 4 pixels, so it differs from its source), with the provenance of
    ``card_from`` (default: the shipped default model) copied into ``.posegen/``."""
    rows = []
    for src in sorted((detected / "train").glob("*.jpg")):
        pid = int(src.name.split("_")[0])
        if pid not in pids:
            continue
        rel = f"{src.stem}_pg00.jpg"
        with Image.open(src) as im:
            arr = np.roll(np.asarray(im.convert("RGB")), 4, axis=1)
        (out).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(out / rel)
        rows.append(dict(path=rel, pid=pid, camid=0 if int(src.stem.split("_")[1]) < 5 else 1, split="train",
                         synthetic=True, source=src.name, k=0, kept=True, reason=""))  # fmt: skip
    pd.DataFrame(rows).to_parquet(out / "manifest.parquet", index=False)
    (out / ".posegen").mkdir(exist_ok=True)
    model = card_from or default_model_dir()
    (out / ".posegen" / "run.json").write_text(json.dumps({"root": str(detected / "train"), "model": str(model)}))
    write_provenance(out / ".posegen", *read_provenance(model))
    return out


@pytest.fixture(scope="module")
def small_run(detected, tmp_path_factory):
    base = tmp_path_factory.mktemp("downstream")
    aug = make_augment_out(detected, base / "aug")
    out = base / "report"
    result = evaluate_downstream(detected, aug, out, fractions=(0.5, 1.0), seeds=(0,), **SMALL)
    return out, result, aug


def test_small_real_run_writes_every_file_with_sane_numbers(small_run):
    out, result, _ = small_run
    for name in ("results.json", "runs.csv", "summary.csv", "summary.md", "cmc.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.rglob("*.tmp"))
    with Image.open(out / "cmc.png") as im:
        assert im.format == "PNG" and im.width > 100
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["runs"]) == 2 * 4 and len(saved["summary"]) == 2 * 4
    # pretrained start by default: the shared OSNet x0.25 MSMT17 ONNX file
    assert saved["config"]["from_scratch"] is False and saved["config"]["init_weights"].endswith("osnet_x0_25_msmt17.onnx")
    assert saved["config"]["fixbase_epochs"] == 0 and saved["config"]["classifier_lr_mult"] == 10.0
    assert saved["protocol"]["n_test_pids"] == 10
    assert saved["protocol"]["n_query"] > 0 and saved["protocol"]["n_gallery"] > 0
    gen = saved["generator"]
    assert gen["verified"] is True and gen["leaked"] is False and gen["image_overlap"] == 0
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
        # the control arms add as many images as posegen: one per posegen image whose source is kept
        assert by.loc["posegen", "n_extra"] == by.loc["duplicate", "n_extra"] == by.loc["flip", "n_extra"] == by.loc["real", "n_real"]
        assert by.loc["real", "n_extra"] == 0 and by.loc["real", "n_pids"] == 6
    assert runs.loc[runs["fraction"] == 0.5, "n_real"].iloc[0] < runs.loc[runs["fraction"] == 1.0, "n_real"].iloc[0]
    summary = pd.read_csv(out / "summary.csv")
    assert {"delta_mAP_mean", "mAP_mean", "mAP_std", "rank1_mean", "vs_duplicate_mAP_mean", "vs_flip_mAP_mean"} <= set(summary.columns)
    md = (out / "summary.md").read_text()
    assert "| 1.00 | posegen |" in md and "| 1.00 | flip |" in md and "Δ mAP" in md and "LEAKED" not in md
    assert "verified" in md and "0 of the" in md
    assert any("duplicate by more than the seed std" in v for v in saved["verdicts"])
    # the flip arm's images are mirrored copies of real training images, written beside the report
    flipped = sorted((out / "flipped").rglob("*_pg00.jpg"))
    assert len(flipped) == runs["n_real"].max()
    src = DETECTED / "train" / flipped[0].name.replace("_pg00", "")
    with Image.open(flipped[0]) as a, Image.open(src) as b:
        diff = np.abs(np.asarray(a, dtype=float) - np.asarray(b.convert("RGB"), dtype=float)[:, ::-1]).mean()
    assert diff < 3.0  # JPEG round trip only


def test_same_seed_reproduces(small_run, detected, tmp_path):
    _, first, _ = small_run
    again = evaluate_downstream(detected, None, tmp_path / "again", arms=("real",), fractions=(1.0,), seeds=(0,), **SMALL)
    a = next(r for r in first["runs"] if r["arm"] == "real" and r["fraction"] == 1.0)
    b = again["runs"][0]
    assert b["mAP"] == pytest.approx(a["mAP"], abs=1e-6)
    np.testing.assert_allclose(b["cmc"], a["cmc"], atol=1e-6)
    assert b["final_loss"] == pytest.approx(a["final_loss"], abs=1e-5)


def test_resume_reuses_finished_runs_and_retrains_changed_ones(small_run, detected, tmp_path):
    out, first, aug = small_run
    saved = sorted((out / "runs").glob("*.json"))
    assert len(saved) == len(first["runs"]) and all(r["resumed"] is False for r in first["runs"])
    work = tmp_path / "report"
    shutil.copytree(out, work)
    # an interrupted call left a run of another experiment (a changed setting gives another key)
    tampered = work / "runs" / "fraction0.5-seed0-real.json"
    rec = json.loads(tampered.read_text())
    tampered.write_text(json.dumps({**rec, "key": "0" * 64}))
    again = evaluate_downstream(detected, aug, work, fractions=(0.5, 1.0), seeds=(0,), arms=("real", "flip"), resume=True, **SMALL)
    by = {(r["fraction"], r["arm"]): r for r in again["runs"]}
    old = {(r["fraction"], r["arm"]): r for r in first["runs"]}
    assert by[(1.0, "real")]["resumed"] and by[(1.0, "flip")]["resumed"] and by[(0.5, "flip")]["resumed"]
    assert by[(1.0, "real")]["mAP"] == old[(1.0, "real")]["mAP"] and by[(1.0, "flip")]["cmc"] == old[(1.0, "flip")]["cmc"]
    assert by[(0.5, "real")]["resumed"] is False  # trained again: same seed, same numbers
    assert by[(0.5, "real")]["mAP"] == pytest.approx(old[(0.5, "real")]["mAP"], abs=1e-6)
    assert json.loads(tampered.read_text())["key"] != "0" * 64  # rewritten with its own key


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
    _, _, clean = small_run
    aug = tmp_path / "aug"
    shutil.copytree(clean, aug)
    # clean copy: passes
    real = load_real(detected, max_train_pids=6, max_test_pids=10)
    check_leaks(load_synthetic(aug, real), real)
    # a synthetic image made from a query image (val/ view A), labelled as training data
    _plant(aug, [{"path": "val_0000_00_pg00.jpg", "source": "../val/0000_00.jpg", "pid": 0, "split": "train"}])
    with pytest.raises(LeakError, match="source is a query/gallery image"):
        evaluate_downstream(detected, aug, tmp_path / "r", **SMALL)
    assert not (tmp_path / "r" / "results.json").exists()

    aug2 = tmp_path / "aug2"
    shutil.copytree(clean, aug2)
    _plant(aug2, [{"path": "0001_00_pg07.jpg", "source": "0001_00.jpg", "pid": 2}])  # wrong identity
    with pytest.raises(LeakError, match="pid differs"):
        evaluate_downstream(detected, aug2, tmp_path / "r2", **SMALL)

    # a synthetic image whose source was dropped by --real-fraction
    syn = load_synthetic(clean, real)
    kept = subsample_real(real.train, 0.5, seed=0)
    with pytest.raises(LeakError, match="dropped"):
        check_leaks(syn, real, kept["path"])
    check_leaks(syn[syn["real_path"].isin(set(kept["path"]))], real, kept["path"])


def test_generator_trained_on_evaluation_images_is_refused_unless_allow_leak(small_run, detected, tmp_path):
    """A fixture model card whose training images include one CUHK03 val (query) image."""
    _, _, clean = small_run
    model = tmp_path / "leaky-model"
    model.mkdir()
    card = {"training_data": [{"dataset": "CUHK03-detected", "split": "val", "folder": str(detected / "val"), "identities": [0, 1]}]}
    write_provenance(model, card, [file_digest(detected / "val" / "0000_00.jpg"), "0123456789abcdef"])
    aug = make_augment_out(detected, tmp_path / "aug", pids=range(6), card_from=model)
    real = load_real(detected, max_train_pids=6, max_test_pids=10)
    check = check_generator_leak(aug, real)
    assert check.verified and check.leaked and check.image_overlap == 1 and check.identity_overlap >= 1
    with pytest.raises(LeakError, match="allow-leak"):
        evaluate_downstream(detected, aug, tmp_path / "r", arms=("real", "posegen"), fractions=(1.0,), **SMALL)
    assert not (tmp_path / "r").exists()
    result = evaluate_downstream(
        detected, aug, tmp_path / "r", arms=("real", "posegen"), fractions=(1.0,), allow_leak=True, from_scratch=True, **SMALL
    )  # fmt: skip
    assert result["generator"]["leaked"] is True and result["config"]["from_scratch"] is True
    assert "LEAKED" in (tmp_path / "r" / "summary.md").read_text().splitlines()[0]
    # no model card at all: cannot be verified, refused the same way
    nocard = tmp_path / "nocard"
    shutil.copytree(clean, nocard)
    for f in ("model_card.json", "training_images.sha256"):
        (nocard / ".posegen" / f).unlink()
    with pytest.raises(LeakError, match="cannot be verified"):
        evaluate_downstream(detected, nocard, tmp_path / "r3", **SMALL)


def test_onnx_osnet_converts_to_torchreid_with_matching_features(detected):
    """The shared ONNX OSNet (BatchNorm folded) as a torchreid osnet_x0_25: features match onnxruntime's."""
    import onnxruntime as ort
    import torch
    from torchreid.reid import models

    from posegen.downstream.pretrained import calibrate_identity_batchnorm, default_osnet_onnx, load_onnx_osnet

    path = default_osnet_onnx()
    if not path.is_file():
        pytest.skip(f"needs the shared OSNet ONNX file at {path}")
    files = sorted((detected / "val").glob("*.jpg"))[::29][:32]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = np.stack([
        ((np.asarray(Image.open(f).convert("RGB").resize((128, 256), Image.BILINEAR)) / 255.0 - mean) / std).transpose(2, 0, 1)
        for f in files
    ]).astype(np.float32)  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    net = models.build_model("osnet_x0_25", num_classes=7, pretrained=False)
    info = load_onnx_osnet(net, path)
    assert info["skipped"] == ["classifier.weight", "classifier.bias"]
    net.eval()

    def cos(f):
        return (f * ref).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(ref, axis=1)

    with torch.no_grad():
        assert cos(net(torch.from_numpy(x)).numpy()).min() >= 0.999
    # BatchNorm calibration keeps the eval-mode function
    assert calibrate_identity_batchnorm(net, torch.from_numpy(x)) > 50
    with torch.no_grad():
        assert cos(net(torch.from_numpy(x)).numpy()).min() >= 0.999
    with pytest.raises(FileNotFoundError):
        load_onnx_osnet(net, path.parent / "missing.onnx")


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
    # the posegen arm without an augment output: one clear line, exit status 2
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o2"), "--arms", "real,posegen"])
    assert res.exit_code == 2 and "--augmented" in res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o4"), "--model", "resnet50"])
    assert res.exit_code == 2 and "--from-scratch" in res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o3"), "--real-fraction", "0.5,x"])
    assert res.exit_code == 2 and "real-fraction" in res.output
