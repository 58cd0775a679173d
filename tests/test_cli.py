"""The Typer app: clear errors for bad input, and extract-poses in every output format."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from posegen.cli.app import app
from posegen.pose.formats import read_poses

runner = CliRunner()


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["augment", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "no image" in res.output.lower()
    assert not (tmp_path / "out").exists()


def test_unknown_layout(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jpg").write_bytes(b"")
    res = runner.invoke(app, ["extract-poses", str(tmp_path / "d"), "--out", str(tmp_path / "p.parquet")])
    assert res.exit_code == 2
    for tried in ("market1501", "cuhk03", "generic"):
        assert tried in res.output
    res = runner.invoke(app, ["extract-poses", str(tmp_path / "d"), "--layout", "nope", "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 2 and "nope" in res.output


def test_bad_recipe_field_is_named(tmp_path, cuhk03_train):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  stepz: 3\n")
    res = runner.invoke(app, ["augment", str(cuhk03_train), "--out", str(tmp_path / "o"), "--recipe", str(recipe)])
    assert res.exit_code == 2
    assert "train.stepz" in res.output
    res = runner.invoke(app, ["augment", str(cuhk03_train), "--out", str(tmp_path / "o"), "--recipe", "nope"])
    assert res.exit_code == 2 and "tiny" in res.output  # lists the built-in recipes


def test_extract_poses_all_formats(tmp_path, cuhk03_train):
    for ext in ("parquet", "csv", "json"):
        out = tmp_path / f"poses.{ext}"
        res = runner.invoke(app, ["extract-poses", str(cuhk03_train), "--out", str(out), "--limit", "5"])
        assert res.exit_code == 0, res.output
        poses = read_poses(out)
        assert len(poses) == 5 and (poses["status"] == "ok").sum() >= 3


def test_train_then_repose(tmp_path, cuhk03_small):
    from PIL import Image

    from posegen.pose.formats import write_poses

    root, manifest, poses = cuhk03_small
    poses_file = write_poses(poses, tmp_path / "poses.parquet")
    run = tmp_path / "run"
    res = runner.invoke(
        app, ["train", "--data", str(root), "--poses", str(poses_file), "--out", str(run), "--steps", "6"]
    )
    assert res.exit_code == 0, res.output
    assert (run / "model" / "model_index.json").exists() and (run / "loss.csv").exists()
    ok = poses[poses["status"] == "ok"]["path"].tolist()
    source, target = root / ok[0], root / ok[-1]
    for target_pose, extra in ((target, []), (poses_file, ["--target-name", ok[-1]])):
        out = tmp_path / f"out-{len(extra)}.png"
        res = runner.invoke(
            app,
            ["repose", "--model", str(run), "--source", str(source), "--target-pose", str(target_pose),
             "--out", str(out), "--steps", "2", *extra],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        with Image.open(out) as im, Image.open(source) as src:
            assert im.size == src.size  # written at the source image's size
    res = runner.invoke(app, ["repose", "--model", str(tmp_path / "nope"), "--source", str(source),
                              "--target-pose", str(target), "--out", str(tmp_path / "x.png")])  # fmt: skip
    assert res.exit_code == 2 and "nope" in res.output



def test_train_default_recipe_fine_tunes_the_shipped_model(tmp_path, cuhk03_small):
    """``posegen train --recipe default`` is the repair fine-tuning stage: it starts from the shipped
    default model's weights (``latent.init_from: default``), not from a random network, and saves a
    model with the recipe's sampling defaults (repair strength, 6 steps)."""
    import json

    from diffusers import UNet2DModel

    from conftest import SHARED, require
    from posegen.pose.formats import write_poses
    from posegen.repose import default_model_dir

    require(SHARED / "weights" / "taef2")
    root, _, poses = cuhk03_small
    poses_file = write_poses(poses, tmp_path / "poses.parquet")
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--recipe", "default", "--data", str(root), "--poses", str(poses_file),
                              "--out", str(run), "--steps", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((run / "config.json").read_text())["init_from"] == "default"
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert index["repair_strength"] == 0.85 and index["num_inference_steps"] == 6
    tuned = UNet2DModel.from_pretrained(str(run / "model" / "unet")).state_dict()
    shipped = UNet2DModel.from_pretrained(str(default_model_dir() / "unet")).state_dict()
    # one step at the first warm-up learning rate, then the EMA: the shipped weights almost exactly
    assert max(float((tuned[k].float() - v.float()).abs().max()) for k, v in shipped.items()) < 1e-3


def test_ctrl_c_says_how_to_continue(monkeypatch, capsys, tmp_path):
    """Ctrl-C in a command (a KeyboardInterrupt) ends with status 130 and the line that says to resume."""
    import sys

    import posegen.augment
    from posegen.cli.app import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(posegen.augment, "augment", interrupted)
    monkeypatch.setattr(sys, "argv", ["posegen", "augment", str(tmp_path), "--out", str(tmp_path / "out"), "--quiet"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 130
    assert "interrupted: re-run with --resume" in capsys.readouterr().err
