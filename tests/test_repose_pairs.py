"""``posegen repose --pairs``: batch re-posing from a Pose-Transfer pairs file, on real CUHK03 images.

Poses are real BlazePose keypoints (session fixture ``cuhk03_small``, 4 identities); the model is
a micro network trained for 2 steps on them (its outputs are noise-like, which is all these tests
need: names, sizes, reasons, determinism, resumption). Skips when ``../shared`` is absent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from posegen._io import stable_seed
from posegen.cli.app import app
from posegen.pose.formats import read_poses, write_poses
from posegen.recipe import load_recipe
from posegen.repose import load_pipeline, train
from posegen.repose.batch import (
    MANIFEST_NAME,
    MARKET_CSV_SIZE,
    model_sample_config,
    pair_output_name,
    read_pairs,
    repose_pairs,
)
from conftest import MARKET_KP, require

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
RES = (32, 16)  # (h, w) of the micro model
SAMPLE_BATCH = 3  # the micro recipe's sample.batch_size (the CLI's default --batch-size)


def _micro_recipe():
    """The tiny recipe with a micro concatenation-only network (the model's defaults otherwise)."""
    r = load_recipe("tiny")
    model = type(r.model)(resolution=RES, block_out_channels=(8, 16), layers_per_block=1,
                          attention_levels=(False, True), norm_num_groups=4, pose_sigma=1.0, limb_width=0.75)  # fmt: skip
    train_cfg = r.train.model_copy(update={"batch_size": 4, "warmup_steps": 1, "sample_every": 1000})
    sample = r.sample.model_copy(update={"steps": 2, "batch_size": SAMPLE_BATCH})
    return r.model_copy(update={"model": model, "train": train_cfg, "sample": sample, "name": "micro"})


@pytest.fixture(scope="module")
def setup(cuhk03_small, tmp_path_factory):
    """A trained micro model, Parquet + CSV poses files and a 7-pair CSV with 2 bad pairs."""
    root, manifest, poses = cuhk03_small
    tmp = tmp_path_factory.mktemp("pairs")
    run = tmp / "run"
    train(_micro_recipe(), manifest, poses, root, run, steps=2)
    ok = poses[poses["status"] == "ok"]["path"].tolist()
    n = len(ok)
    a, b, c, d, e, f = (ok[i] for i in (0, n // 4, n // 2, 3 * n // 4, 1, n - 1))
    # f's pose is made unusable (empty): a pair with f as target must fail with a reason
    poses = poses.copy()
    fi = poses.index[poses["path"] == f][0]
    poses.at[fi, "status"], poses.at[fi, "reason"] = "failed", "no person found"
    poses.at[fi, "keypoints"] = np.zeros((17, 3), np.float32)
    parquet = write_poses(poses, tmp / "poses.parquet")
    csv = write_poses(poses, tmp / "poses.csv")
    good = [(a, b), (b, c), (c, d), (d, a), (e, b)]
    bad = [("9999_00.jpg", a), (a, f)]  # missing source image; target without pose
    pairs = pd.DataFrame(good[:3] + bad[:1] + good[3:] + bad[1:], columns=["from", "to"])
    pairs_csv = tmp / "pairs.csv"
    pairs.to_csv(pairs_csv, index=False)
    return {"root": root, "run": run, "poses": poses, "parquet": parquet, "csv": csv, "pairs": pairs,
            "pairs_csv": pairs_csv, "good": good, "bad": bad, "tmp": tmp}  # fmt: skip


@pytest.fixture(scope="module")
def pipe(setup):
    return load_pipeline(setup["run"] / "model")


def _bytes(folder, names):
    return {n: (folder / n).read_bytes() for n in names}


def _same_up_to_rounding(folder, names, reference: dict) -> bool:
    """Every ``folder / name`` decodes to ``reference[name]``'s pixels within one grey level at no
    more than 1 % of the pixels: another batch size may change the CPU's convolution algorithm and
    with it the last float bit (seen: one pixel, one level), while any batch-level coupling of the
    samples would change whole images."""
    import io

    for n in names:
        a = np.asarray(Image.open(folder / n), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(reference[n])), dtype=np.int16)
        if a.shape != b.shape or np.abs(a - b).max() > 1 or (a != b).mean() > 0.01:
            return False
    return True


def test_read_pairs_market_file_and_errors(tmp_path):
    market = read_pairs(require(MARKET_KP / "market-pairs-test.csv"))
    assert list(market.columns) == ["from", "to"] and len(market) == 12000
    assert market.iloc[0].tolist() == ["0188_c2s2_149727_03.jpg", "0188_c4s6_008910_07.jpg"]
    (tmp_path / "p.csv").write_text(",from,to\n0,a.jpg, b.jpg\n1,a.jpg,b.jpg\n2,c.jpg,a.jpg\n")
    pairs = read_pairs(tmp_path / "p.csv")  # index column ignored, spaces stripped, duplicates dropped
    assert pairs.values.tolist() == [["a.jpg", "b.jpg"], ["c.jpg", "a.jpg"]]
    (tmp_path / "bad.csv").write_text("source,target\na.jpg,b.jpg\n")
    with pytest.raises(ValueError, match="'from' and 'to'"):
        read_pairs(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_pairs(tmp_path / "nope.csv")
    assert pair_output_name("train/0001_03.jpg", "0002_07.png") == "0001_03__0002_07.png"


def test_library_batch_outputs_reasons_resume_and_batch_independence(setup, pipe, tmp_path):
    root, good, bad = setup["root"], setup["good"], setup["bad"]
    out4 = tmp_path / "b4"
    seen = []
    man = repose_pairs(setup["pairs_csv"], setup["parquet"], root, out4, pipe=pipe, steps=2, seed=5,
                       batch_size=4, progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)
    assert man[["from", "to"]].values.tolist() == setup["pairs"].values.tolist()  # file order
    assert (man["status"] == "ok").sum() == 5 and (man["status"] == "failed").sum() == 2
    names = [pair_output_name(s, t) for s, t in good]
    assert sorted(man.loc[man["status"] == "ok", "output"]) == sorted(names)
    for n in names:
        assert "__" in n and n.endswith(".png")
        with Image.open(out4 / n) as im:
            assert im.size == (RES[1], RES[0]) and im.mode == "RGB"  # the model's resolution
    reasons = dict(zip(zip(man["from"], man["to"]), man["reason"]))
    assert "9999_00.jpg" in reasons[bad[0]] and "missing" in reasons[bad[0]]
    assert "target" in reasons[bad[1]] and "no person found" in reasons[bad[1]]
    assert not (out4 / pair_output_name(*bad[0])).exists() and not (out4 / pair_output_name(*bad[1])).exists()
    assert man["seed"].tolist() == [stable_seed(5, s, t) for s, t in setup["pairs"].values.tolist()]
    on_disk = pd.read_csv(out4 / MANIFEST_NAME, keep_default_na=False)
    assert on_disk[["from", "to", "status", "reason"]].values.tolist() == man[["from", "to", "status", "reason"]].values.tolist()
    first = _bytes(out4, names)
    # outputs are not all the same image (each pair has its own source, pose and noise)
    assert len(set(first.values())) == len(names)

    # re-run: finished pairs are skipped and left untouched; the bad ones fail again
    again = repose_pairs(setup["pairs_csv"], setup["parquet"], root, out4, pipe=pipe, steps=2, seed=5, batch_size=4)
    assert (again["status"] == "skipped-existing").sum() == 5 and (again["status"] == "failed").sum() == 2
    assert _bytes(out4, names) == first

    # resumption after a lost output, in batches of 1: the regenerated file is the same image, the
    # others are untouched
    (out4 / names[2]).unlink()
    resumed = repose_pairs(setup["pairs_csv"], setup["parquet"], root, out4, pipe=pipe, steps=2, seed=5, batch_size=1)
    assert resumed.loc[resumed["output"] == names[2], "status"].tolist() == ["ok"]
    assert {n: b for n, b in _bytes(out4, names).items() if n != names[2]} == {n: b for n, b in first.items() if n != names[2]}
    assert _same_up_to_rounding(out4, names[2:3], first)

    # a whole run in batches of 1 gives the same images as batches of 4 (up to float rounding)
    out1 = tmp_path / "b1"
    repose_pairs(setup["pairs"], setup["poses"], root, out1, pipe=pipe, steps=2, seed=5, batch_size=1)
    assert _same_up_to_rounding(out1, names, first)
    # and another seed gives other images
    out_s = tmp_path / "s6"
    repose_pairs(setup["pairs"], setup["poses"], root, out_s, pipe=pipe, steps=2, seed=6, batch_size=4, limit=1)
    assert (out_s / names[0]).read_bytes() != first[names[0]]
    # pose guidance reaches the pipeline (guided sampling gives another image)
    out_g = tmp_path / "g"
    repose_pairs(setup["pairs"], setup["poses"], root, out_g, pipe=pipe, steps=2, seed=5, limit=1, pose_guidance_scale=3.0)
    assert (out_g / names[0]).read_bytes() != first[names[0]]


def test_missing_source_pose_fails_or_is_estimated(setup, pipe, blazepose, tmp_path):
    root, a = setup["root"], setup["good"][0][0]
    from posegen.data.images import read_image
    from posegen.pose.backends import NoPersonFound

    def person_found(p):
        try:
            return blazepose.estimate(read_image(p)) is not None
        except NoPersonFound:
            return False

    # an image outside the poses file (pids >= 4) in which BlazePose finds a person
    other = next(p.name for p in sorted(root.glob("001[0-9]_*.jpg")) if person_found(p))
    pairs = pd.DataFrame([(other, a)], columns=["from", "to"])
    man = repose_pairs(pairs, setup["poses"], root, tmp_path / "o", pipe=pipe, steps=2, seed=0, batch_size=2)
    assert man["status"].tolist() == ["failed"] and "no source pose" in man["reason"][0]
    man = repose_pairs(pairs, setup["poses"], root, tmp_path / "o", pipe=pipe, steps=2, seed=0, batch_size=2,
                       backend=blazepose)  # fmt: skip
    assert man["status"].tolist() == ["ok"], man["reason"].tolist()
    assert (tmp_path / "o" / f"{other[:-4]}__{a[:-4]}.png").is_file()


class _Recorder:
    """Stands in for a ReposePipeline: records the call and returns black images of (128, 64)."""

    def __init__(self):
        self.calls = []

    def __call__(self, source_images, source_keypoints, target_keypoints, *, source_sizes, target_sizes,
                 num_inference_steps, generator, output_type):  # fmt: skip
        self.calls.append({"source_sizes": source_sizes, "target_sizes": target_sizes,
                           "target_keypoints": np.asarray(target_keypoints), "n": len(source_images)})  # fmt: skip
        return np.zeros((len(source_images), 128, 64, 3), np.uint8)


class _GuidedRecorder(_Recorder):
    def __call__(self, source_images, source_keypoints, target_keypoints, *, source_sizes, target_sizes,
                 num_inference_steps, generator, output_type, pose_guidance_scale=1.0,
                 appearance_guidance_scale=1.0):  # fmt: skip
        out = super().__call__(source_images, source_keypoints, target_keypoints, source_sizes=source_sizes,
                               target_sizes=target_sizes, num_inference_steps=num_inference_steps,
                               generator=generator, output_type=output_type)  # fmt: skip
        given = {"pose_guidance_scale": pose_guidance_scale, "appearance_guidance_scale": appearance_guidance_scale}
        self.calls[-1]["guidance"] = {k: v for k, v in given.items() if v != 1.0}
        return out


def test_market_csv_poses_refer_to_64x128(tmp_path):
    """Market-1501 Pose-Transfer CSVs carry no image size: their targets are 64x128 (w x h)."""
    pairs = read_pairs(require(MARKET_KP / "market-pairs-test.csv")).head(40)
    bank = read_poses(MARKET_KP / "market-annotation-test.csv")
    assert (bank["width"] == -1).all() and (bank["height"] == -1).all()
    names = set(bank.loc[bank["status"] == "ok", "path"])
    pairs = pairs[pairs["from"].isin(names) & pairs["to"].isin(names)].head(3).reset_index(drop=True)
    assert len(pairs) == 3
    rng = np.random.default_rng(0)
    for name in pairs["from"]:  # stand-in source images (the Market images are not in ../shared)
        Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    rec = _Recorder()
    man = repose_pairs(pairs, bank, tmp_path, tmp_path / "out", pipe=rec, steps=1, batch_size=8, min_score=0.5)
    assert man["status"].tolist() == ["ok"] * 3 and len(rec.calls) == 1
    assert [tuple(s) for s in rec.calls[0]["target_sizes"]] == [MARKET_CSV_SIZE] * 3 == [(64, 128)] * 3
    assert [tuple(s) for s in rec.calls[0]["source_sizes"]] == [(64, 128)] * 3
    expected = np.stack([bank.loc[bank["path"] == t, "keypoints"].iloc[0] for t in pairs["to"]])
    np.testing.assert_array_equal(rec.calls[0]["target_keypoints"], expected)
    # a guidance scale the pipeline does not take is a clear error, not silently dropped
    with pytest.raises(ValueError, match="pose_guidance_scale"):
        repose_pairs(pairs, bank, tmp_path, tmp_path / "out2", pipe=rec, steps=1, min_score=0.5, pose_guidance_scale=2.0)
    # one that it takes is passed through; None leaves the pipeline's default
    guided = _GuidedRecorder()
    repose_pairs(pairs, bank, tmp_path, tmp_path / "out3", pipe=guided, steps=1, min_score=0.5,
                 pose_guidance_scale=2.5)  # fmt: skip
    assert guided.calls[0]["guidance"] == {"pose_guidance_scale": 2.5}


def test_cli_pairs_with_csv_poses_limit_and_resume(setup, tmp_path):
    root, run, good = setup["root"], setup["run"], setup["good"]
    assert model_sample_config(run).batch_size == SAMPLE_BATCH
    out = tmp_path / "cli"
    base = ["repose", "--model", str(run), "--pairs", str(setup["pairs_csv"]), "--poses", str(setup["csv"]),
            "--images", str(root), "--out", str(out), "--seed", "3"]  # fmt: skip
    res = runner.invoke(app, [*base, "--limit", "3"])
    assert res.exit_code == 0, res.output
    man = pd.read_csv(out / MANIFEST_NAME, keep_default_na=False)
    assert len(man) == 3 and man["status"].tolist() == ["ok"] * 3
    names = [pair_output_name(s, t) for s, t in good[:3]]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(names)
    for n in names:
        with Image.open(out / n) as im:
            assert im.size == (RES[1], RES[0])
    first = _bytes(out, names)
    res = runner.invoke(app, [*base, "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    man = pd.read_csv(out / MANIFEST_NAME, keep_default_na=False)
    assert man["status"].tolist() == ["skipped-existing"] * 3 + ["failed", "ok", "ok", "failed"]
    assert "failed" in res.output and "9999_00.jpg" in res.output
    assert _bytes(out, names) == first
    # the CSV path (integer keypoints, sizes from the target images) agrees with the library call
    lib = repose_pairs(setup["pairs_csv"], read_poses(setup["csv"]), root, tmp_path / "lib", pipe=load_pipeline(run / "model"),
                       steps=2, seed=3, batch_size=5)  # fmt: skip
    assert _bytes(tmp_path / "lib", names) == first and (lib["status"] == "ok").sum() == 5
    # --pose-guidance / --appearance-guidance reach the pipeline
    res = runner.invoke(app, [*base[:-4], "--out", str(tmp_path / "g"), "--seed", "3", "--limit", "1",
                              "--pose-guidance", "3", "--appearance-guidance", "0.5"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g" / names[0]).read_bytes() != first[names[0]]


def test_cli_option_errors(setup, tmp_path):
    run, root = str(setup["run"]), str(setup["root"])
    src = str(root + "/" + setup["good"][0][0])
    cases = [
        (["--pairs", str(setup["pairs_csv"]), "--poses", str(setup["parquet"]), "--images", root, "--source", src],
         "--pairs cannot be combined with --source"),
        (["--pairs", str(setup["pairs_csv"]), "--poses", str(setup["parquet"])], "--pairs needs --images"),
        (["--source", src, "--target-pose", str(setup["parquet"]), "--limit", "2"], "--limit only work"),
        (["--source", src], "give --source and --target-pose"),
        (["--pairs", str(tmp_path / "nope.csv"), "--poses", str(setup["parquet"]), "--images", root], "nope.csv"),
    ]  # fmt: skip
    for extra, message in cases:
        res = runner.invoke(app, ["repose", "--model", run, "--out", str(tmp_path / "o"), *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert message in " ".join(res.output.split()), (message, res.output)
    assert not (tmp_path / "o").exists()
