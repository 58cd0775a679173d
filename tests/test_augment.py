"""`augment` end to end on real CUHK03 images: output tree, manifest, reasons, resume, safety, the
report, and `posegen filter` (re-scoring an output folder)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SHARED, require
from PIL import Image

from posegen.augment import MANIFEST_COLUMNS, OutputDirError, augment, summarize, synthetic_name
from posegen.augment.run import NO_REID_NOTE, SCORE_COLUMNS
from posegen.data import load_dataset
from posegen.filter import REASON_ORDER, refilter
from posegen.recipe import load_recipe

LIMIT, K, STEPS = 12, 2, 4
OSNET = SHARED / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx"


@pytest.fixture(scope="module")
def run(cuhk03_train, blazepose, tmp_path_factory):
    """One augment run with no --model: it trains the tiny recipe briefly on the 12 images first."""
    out = tmp_path_factory.mktemp("aug") / "out"
    before = sorted(p.name for p in cuhk03_train.iterdir())
    manifest = augment(
        cuhk03_train, out, recipe=load_recipe("tiny"), backend=blazepose, seed=3, k=K, limit=LIMIT,
        num_inference_steps=STEPS, train_steps=30, reid_weights=require(OSNET),
    )  # fmt: skip
    assert sorted(p.name for p in cuhk03_train.iterdir()) == before  # DIR is never modified
    return out, manifest


def test_output_tree_and_manifest(run, cuhk03_train):
    out, manifest = run
    assert (out / "manifest.parquet").exists()
    assert pd.read_parquet(out / "manifest.parquet")["path"].tolist() == manifest["path"].tolist()
    real = manifest[~manifest["synthetic"]]
    assert len(real) == LIMIT
    for rel in real["path"]:  # the real images, copied in the input's layout
        assert (out / rel).read_bytes() == (cuhk03_train / rel).read_bytes()
    syn = manifest[manifest["synthetic"]]
    generated = syn[syn["k"] > 0]
    sources = set(generated["source"])
    assert len(generated) == K * len(sources) and len(sources) >= LIMIT // 2
    for _, row in generated.iterrows():
        assert row["path"].endswith(synthetic_name(row["source"], row["k"]))
        assert (out / row["path"]).is_file()
        assert row["target_pose_source"] != row["source"]
        if row["kept"]:
            assert row["reason"] == "" and row["oks"] >= 0.5 and not row["path"].startswith(".posegen")
        else:
            assert row["reason"] and row["path"].startswith(".posegen/rejected/")
    skipped = syn[syn["k"] == 0]
    assert all(r.startswith("source pose") for r in skipped["reason"])
    # the enlarged dataset parses with the input's layout; synthetic files are recognised by name
    again = load_dataset(out)
    assert again.attrs["layout"] == "cuhk03"
    assert again["synthetic"].sum() == generated["kept"].sum()
    assert (out / ".posegen" / "model-run" / "model" / "model_index.json").exists()
    s = summarize(manifest)
    assert s["kept"] + s["rejected"] == len(syn) and s["real"] == LIMIT
    # filter v2: every score column is present; identity scores computed for every finite output
    assert list(manifest.columns) == MANIFEST_COLUMNS
    scored = generated[generated["path"] != ""]
    assert scored["identity_sim"].between(-1, 1).all() and scored["source_ssim"].between(-1, 1).all()
    assert scored["source_pose_oks"].between(0, 1).all() and scored["prior_energy"].notna().all()
    assert scored["identity_sim_others"].notna().all()  # CUHK03 pids have other train images
    assert real[SCORE_COLUMNS].isna().all().all()
    for r in syn.loc[~syn["kept"], "reason"]:
        assert r.startswith("source pose") or any(r.startswith(p) for p in (*REASON_ORDER, "implausible target pose"))
    settings = json.loads((out / ".posegen" / "run.json").read_text())
    assert settings["reid_weights"] == str(OSNET.resolve()) and settings["notes"] == []
    # the report
    assert (out / "report.html").is_file() and (out / ".posegen" / "report" / "scores.png").is_file()
    assert any((out / ".posegen" / "report").glob("out-*.png"))


def test_non_empty_out_is_refused(run, cuhk03_train, blazepose):
    out, _ = run
    with pytest.raises(OutputDirError, match="--resume"):
        augment(cuhk03_train, out, recipe=load_recipe("tiny"), backend=blazepose, limit=LIMIT)
    with pytest.raises(OutputDirError, match="settings differ"):
        augment(
            cuhk03_train, out, recipe=load_recipe("tiny"), backend=blazepose, seed=4, k=K, limit=LIMIT,
            num_inference_steps=STEPS, train_steps=30, resume=True,
        )  # fmt: skip
    with pytest.raises(OutputDirError, match="DIR"):
        augment(cuhk03_train, cuhk03_train / "sub", recipe=load_recipe("tiny"), backend=blazepose)


def test_interrupted_run_resumes_identically(run, cuhk03_train, blazepose):
    out, manifest = run
    parts = sorted((out / ".posegen" / "parts").glob("part-*.parquet"))
    last = pd.read_parquet(parts[-1])
    images = {rel: (out / rel).read_bytes() for rel in last["path"]}
    # simulate an interruption during the last batch: its part file and images are gone
    parts[-1].unlink()
    for rel in last["path"]:
        (out / rel).unlink()
    (out / "manifest.parquet").unlink()
    resumed = augment(
        cuhk03_train, out, recipe=load_recipe("tiny"), backend=blazepose, seed=3, k=K, limit=LIMIT,
        num_inference_steps=STEPS, train_steps=30, reid_weights=OSNET, resume=True,
    )  # fmt: skip
    assert {rel: (out / rel).read_bytes() for rel in last["path"]} == images
    pd.testing.assert_frame_equal(
        resumed.sort_values(["source", "k", "path"]).reset_index(drop=True),
        manifest.sort_values(["source", "k", "path"]).reset_index(drop=True),
    )


def _copy_run(run, tmp_path):
    out, _ = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return copy


def _recipe_file(tmp_path, name, **filter_fields):
    data = yaml.safe_load(_tiny_path().read_text())
    data["filter"].update(filter_fields)
    data["augment"]["prior_threshold"] = 1e9  # no target is implausible
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _tiny_path():
    from posegen.recipe import builtin_recipes

    return builtin_recipes()["tiny"]


def _agrees_with_disk(out, manifest):
    syn = manifest[manifest["synthetic"] & (manifest["k"] > 0) & (manifest["path"] != "")]
    for _, r in syn.iterrows():
        name = synthetic_name(r["source"], r["k"])
        kept_file, rej_file = out / name, out / ".posegen" / "rejected" / name
        assert r["path"] == (name if r["kept"] else f".posegen/rejected/{name}")
        assert kept_file.is_file() == bool(r["kept"]) and rej_file.is_file() == (not r["kept"])
    parts = pd.concat([pd.read_parquet(p) for p in sorted((out / ".posegen" / "parts").glob("part-*.parquet"))])
    key = ["source", "k"]
    pd.testing.assert_frame_equal(
        parts.sort_values(key).reset_index(drop=True),
        manifest[manifest["synthetic"] & (manifest["k"] > 0)].sort_values(key).reset_index(drop=True),
    )


def test_refilter_same_thresholds_changes_nothing(run, blazepose, tmp_path):
    out = _copy_run(run, tmp_path)
    before = pd.read_parquet(out / "manifest.parquet")
    after = refilter(out, backend=blazepose)
    cols = ["path", "kept", "reason", *SCORE_COLUMNS]
    pd.testing.assert_frame_equal(after[cols], before[cols], check_exact=False, atol=1e-6)
    _agrees_with_disk(out, after)


def test_refilter_reads_an_out_written_before_a_score_column(run, blazepose, tmp_path):
    """An OUT from a posegen without the ``invented_fraction`` score (manifest and part files lack
    the column) is re-filtered: the column is added and filled, the decisions stay the same."""
    out = _copy_run(run, tmp_path)
    before = pd.read_parquet(out / "manifest.parquet")
    for f in [out / "manifest.parquet", *sorted((out / ".posegen" / "parts").glob("part-*.parquet"))]:
        pd.read_parquet(f).drop(columns="invented_fraction").to_parquet(f)
    after = refilter(out, backend=blazepose)
    cols = ["path", "kept", "reason", "invented_fraction"]
    pd.testing.assert_frame_equal(after[cols], before[cols], check_exact=False, atol=1e-6)
    assert after.loc[after["synthetic"] & (after["path"] != ""), "invented_fraction"].notna().any()
    _agrees_with_disk(out, after)


def test_refilter_moves_files_when_thresholds_change(run, cuhk03_train, blazepose, tmp_path):
    out = _copy_run(run, tmp_path)
    manifest = pd.read_parquet(out / "manifest.parquet")
    gen = manifest[manifest["synthetic"] & (manifest["k"] > 0) & (manifest["path"] != "")]
    # plant a good output: a real photo of the source's identity in place of one generated image
    r = gen.iloc[0]
    pid = int(r["pid"])
    real = [p for p in sorted(cuhk03_train.glob(f"{pid:04d}_*.jpg")) if p.name != r["source"]][0]
    with Image.open(real) as im:
        im.convert("RGB").resize((int(r["width"]), int(r["height"]))).save(out / r["path"], quality=95)
    lax = _recipe_file(
        tmp_path, "lax", min_oks=0.0, min_std=0.0, min_identity=-1.0, min_identity_others=-1.0, max_source_ssim=1.0
    )
    first = refilter(out, recipe=load_recipe(lax), backend=blazepose)
    planted = first[(first["source"] == r["source"]) & (first["k"] == r["k"])].iloc[0]
    assert planted["kept"], planted["reason"]
    assert planted["path"] == synthetic_name(r["source"], int(r["k"])) and (out / planted["path"]).is_file()
    _agrees_with_disk(out, first)
    assert load_dataset(out)["synthetic"].sum() == first.loc[first["synthetic"], "kept"].sum()
    # a stricter threshold through the CLI: the kept image goes back to the rejected folder
    from typer.testing import CliRunner

    from posegen.cli.app import app

    strict = _recipe_file(tmp_path, "strict", min_oks=1.0)
    res = CliRunner().invoke(app, ["filter", str(out), "--recipe", str(strict), "--reid-weights", str(OSNET)])
    assert res.exit_code == 0, res.output
    assert "before" in res.output and "after" in res.output
    second = pd.read_parquet(out / "manifest.parquet")
    planted = second[(second["source"] == r["source"]) & (second["k"] == r["k"])].iloc[0]
    assert not planted["kept"] and planted["reason"] == "low pose fidelity (OKS < 1)"
    assert planted["path"].startswith(".posegen/rejected/") and (out / planted["path"]).is_file()
    assert not (out / synthetic_name(r["source"], int(r["k"]))).exists()
    _agrees_with_disk(out, second)
    info = json.loads((out / ".posegen" / "refilter.json").read_text())
    assert info["moved_to_rejected"] >= 1 and info["filter"]["min_oks"] == 1.0
    # inputs untouched, report rewritten with existing thumbnails only
    assert (out / "report.html").is_file()
    for src in __import__("re").findall(r'src="([^"]+)"', (out / "report.html").read_text()):
        assert (out / src).is_file()


def test_no_reid_weights_skips_identity_with_a_note(cuhk03_train, blazepose, tmp_path, run):
    """Without re-ID weights the identity scores are NaN, run.json and the report say why."""
    model = run[0] / ".posegen" / "model-run"  # the fixture's trained model: no training here
    out = tmp_path / "noreid"
    manifest = augment(
        cuhk03_train, out, recipe=load_recipe("tiny"), backend=blazepose, model=model, seed=3, k=1, limit=4,
        num_inference_steps=2,
    )  # fmt: skip
    settings = json.loads((out / ".posegen" / "run.json").read_text())
    assert settings["reid_weights"] is None and settings["notes"] == [NO_REID_NOTE]
    gen = manifest[manifest["synthetic"] & (manifest["k"] > 0) & (manifest["path"] != "")]
    assert len(gen) and gen["identity_sim"].isna().all() and gen["identity_sim_others"].isna().all()
    assert np.isfinite(gen["source_ssim"]).all() and np.isfinite(gen["oks"]).all()
    assert NO_REID_NOTE in (out / "report.html").read_text()


def test_real_fraction_augments_the_subset_eval_downstream_trains_on(cuhk03_train, blazepose, tmp_path, run):
    """`augment --real-fraction F --seed S` re-poses only images of the subset that
    `eval-downstream --real-fraction F --seeds S` keeps (same draw on DIR = detected/train as on detected/)."""
    from posegen.data.subsets import subsample_real, subsample_union

    model = run[0] / ".posegen" / "model-run"
    out = tmp_path / "fraction"
    manifest = augment(
        cuhk03_train, out, recipe=load_recipe("tiny"), backend=blazepose, model=model, seed=5, k=1, limit=4,
        num_inference_steps=2, real_fraction=0.2,
    )  # fmt: skip
    settings = json.loads((out / ".posegen" / "run.json").read_text())
    assert settings["real_fraction"] == 0.2 and settings["subset_seeds"] == [5]
    assert settings["model_card"] is False  # a model trained here has no card: eval-downstream will refuse it
    train = load_dataset(cuhk03_train)
    subset = subsample_real(train, 0.2, 5)
    real = manifest[~manifest["synthetic"]]
    assert list(real["path"]) == sorted(subset["path"])[:4]
    # eval-downstream draws on the dataset root (paths with train/): the same images
    root = load_dataset(cuhk03_train.parent)
    eval_subset = subsample_real(root[root["split"] == "train"].reset_index(drop=True), 0.2, 5)
    assert {f"train/{p}" for p in subset["path"]} == set(eval_subset["path"])
    # several seeds: the union, which holds each seed's subset
    union = subsample_union(train, 0.2, (0, 1, 2))
    for s in (0, 1, 2):
        assert set(subsample_real(train, 0.2, s)["path"]) <= set(union["path"])
    with pytest.raises(ValueError, match="real-fraction"):
        augment(cuhk03_train, tmp_path / "bad", recipe=load_recipe("tiny"), backend=blazepose, model=model, real_fraction=1.5)
    assert not (tmp_path / "bad").exists()


def test_summary_groups_rejections_by_kind():
    """Per-image values stay in the manifest; the counts table groups reasons by kind."""
    from posegen.filter.scores import reason_kind

    reasons = [
        "implausible source pose: collapsed: joints span 0.42 of the image height (< 0.5)",
        "implausible source pose: collapsed: joints span 0.31 of the image height (< 0.5)",
        "source pose has 7 keypoints (< 10)",
        "source pose has 9 keypoints (< 10)",
        "low pose fidelity (OKS < 0.5)",
        "",
    ]
    m = pd.DataFrame({c: [None] * len(reasons) for c in MANIFEST_COLUMNS})
    m = m.assign(synthetic=True, k=1, kept=[r == "" for r in reasons], reason=reasons, oks=0.6, identity_sim=0.9)
    s = summarize(m)
    assert s["rejected_by_reason"] == {
        "implausible source pose: collapsed": 2, "source pose has < 10 keypoints": 2, "low pose fidelity (OKS < 0.5)": 1,
    }  # fmt: skip
    assert s["kept"] == 1 and s["rejected"] == 5
    assert reason_kind("near-copy of source (SSIM >= 0.7)") == "near-copy of source (SSIM >= 0.7)"


def test_resume_survives_a_recipe_field_added_since(tmp_path):
    """A run record written before a recipe field existed resumes when today's recipe keeps that
    field at its default (the earlier behaviour); a changed setting, or the new field set otherwise,
    still refuses."""
    from posegen.augment.run import _prepare_out

    settings = {"root": "DIR", "seed": 0, "recipe": load_recipe("default").model_dump(mode="json")}
    out = tmp_path / "out"
    (out / ".posegen").mkdir(parents=True)
    (out / "0001_00.jpg").write_bytes(b"kept output")

    def record(drop: str) -> None:
        old = json.loads(json.dumps(settings))
        del old["recipe"]["augment"][drop]  # as a posegen without that field wrote it
        (out / ".posegen" / "run.json").write_text(json.dumps(old))

    record("view_tolerance")  # the default recipe keeps it at the field's default
    _prepare_out(out, settings, resume=True, overwrite=False)
    record("plausible_only")  # the default recipe sets it otherwise than the field's default
    with pytest.raises(OutputDirError, match=r"settings differ.*recipe"):
        _prepare_out(out, settings, resume=True, overwrite=False)
    record("view_tolerance")
    changed = json.loads(json.dumps(settings))
    changed["recipe"]["augment"]["k"] = 7
    with pytest.raises(OutputDirError, match=r"settings differ.*recipe"):
        _prepare_out(out, changed, resume=True, overwrite=False)
    (out / ".posegen" / "run.json").write_text(json.dumps({**settings, "recipe": {"augment": {"no_such_field": 1}}}))
    with pytest.raises(OutputDirError, match=r"settings differ.*recipe"):
        _prepare_out(out, settings, resume=True, overwrite=False)


def test_target_preference_for_little_limb_motion():
    """``augment.max_arm_motion`` / ``max_leg_motion`` (the default recipe: 0.2 / 0.2): a target
    that moves an elbow or a wrist (a knee or an ankle) farther than that many source torso lengths
    (here 32 px) ranks after those within, one beyond both limits last; a pose whose arms are not
    shared counts as within, and a front
    view onto a back view is compared side by side (as the warp pairs it); both off (None), there is
    no preference."""
    from conftest import standing_pose

    from posegen.augment.run import _limb_preference

    recipe = load_recipe("default")
    assert (recipe.augment.max_arm_motion, recipe.augment.max_leg_motion) == (0.2, 0.2)
    stand = standing_pose()
    swing = stand.copy()
    swing[[9, 10], 0] += [-6, 6]  # both wrists swung out by 6 px: 0.19 torso lengths
    reach = stand.copy()
    reach[[7, 9], :2] = [(14, 30), (8, 20)]  # the left arm raised: the wrist 35 px away
    armless = stand.copy()
    armless[7:11, 2] = 0.0
    back = stand.copy()
    back[:, 0] = 63 - back[:, 0]  # the same person from behind: every label on the other side
    back[[1, 2, 3, 4], 2] = 0.0  # no face
    back[0, 2] = 0.0
    stride = stand.copy()
    stride[[13, 15], 0] -= [6, 12]  # a long step: the left ankle 12 px forward, 0.375 torso lengths
    prefer = _limb_preference(recipe)
    both = reach.copy()
    both[[13, 15], 0] -= [6, 12]
    got = prefer("a.jpg", stand, np.stack([stand, swing, reach, armless, back, stride, both]))
    assert got.tolist() == [0, 0, 1, 0, 0, 1, 2]  # how many limits each exceeds: the rank
    legs_only = recipe.model_copy(update={"augment": recipe.augment.model_copy(update={"max_arm_motion": None})})
    assert _limb_preference(legs_only)("a.jpg", stand, np.stack([reach, stride])).tolist() == [0, 1]
    off = legs_only.model_copy(update={"augment": legs_only.augment.model_copy(update={"max_leg_motion": None})})
    assert _limb_preference(off) is None


def test_target_choice_skips_targets_the_pose_only_checks_would_reject():
    """``augment``'s target test for the default model predicts the filter's two pose-only checks:
    a target that would make the warp copy the source's arm onto the torso (foreign-part share above
    ``max_foreign_fraction``) is refused, the source's own pose passes, and with both checks and the
    hands rule off there is no test. With the limb-motion limits (the default), the checks see the
    target as the model will be asked for it, its limbs moved back within the limits."""
    from conftest import standing_pose

    from posegen.augment.run import _honour_check, placed_target

    default = load_recipe("default")
    assert (default.augment.honour_invented_fraction, default.augment.honour_foreign_fraction) == (0.12, 0.01)
    free = {"limit_limb_motion": False, "honour_invented_fraction": None, "honour_foreign_fraction": None}  # the filter's limits
    recipe = default.model_copy(update={"augment": default.augment.model_copy(update=free)})
    pose_of = pd.DataFrame({"width": [64], "height": [128]}, index=["a.jpg"])
    honour = _honour_check(recipe, pose_of)
    stand = standing_pose()
    across = stand.copy()
    across[[7, 9, 8, 10], :2] = [(30, 40), (36, 52), (34, 42), (28, 54)]  # both forearms over the torso
    assert honour("a.jpg", stand, np.stack([stand, stand])).tolist() == [True, True]
    assert honour("a.jpg", across, stand[None]).tolist() == [False]
    off = recipe.model_copy(update={"filter": recipe.filter.model_copy(update={"max_foreign_fraction": None})})
    assert _honour_check(off, pose_of)("a.jpg", across, stand[None]).tolist() == [True]  # the foreign test is off
    # augment.honour_foreign_fraction: the choice's own limit, whatever the filter's
    loose = recipe.model_copy(update={"augment": recipe.augment.model_copy(update={"honour_foreign_fraction": 1.0})})
    assert _honour_check(loose, pose_of)("a.jpg", across, stand[None]).tolist() == [True]
    own = off.model_copy(update={"augment": off.augment.model_copy(update={"honour_foreign_fraction": 0.04})})
    assert _honour_check(own, pose_of)("a.jpg", across, stand[None]).tolist() == [False]
    none = off.model_copy(update={"filter": off.filter.model_copy(update={"max_invented_fraction": None}),
                                  "augment": off.augment.model_copy(update={"avoid_hands_onto_torso": False})})
    assert _honour_check(none, pose_of) is None
    # avoid_hands_onto_torso: a target that puts a hanging hand over the torso goes after the others,
    # not when the source already holds it there
    phone = stand.copy()
    phone[[8, 10], :2] = [(40, 44), (34, 44)]  # the right forearm raised across the chest
    hands = none.model_copy(update={"augment": none.augment.model_copy(update={"avoid_hands_onto_torso": True})})
    test = _honour_check(hands, pose_of)
    assert test("a.jpg", stand, np.stack([stand, phone])).tolist() == [True, False]
    assert test("a.jpg", phone, np.stack([stand, phone])).tolist() == [True, True]
    # with the limits, the raised forearm is turned back off the chest before the test: it passes,
    # as its limited pose (the one the filter scores) does without them
    limited = hands.model_copy(update={"augment": hands.augment.model_copy(update={"limit_limb_motion": True})})
    assert test("a.jpg", stand, placed_target(limited, stand, phone)[None]).tolist() == [True]
    assert _honour_check(limited, pose_of)("a.jpg", stand, np.stack([stand, phone])).tolist() == [True, True]
    assert _honour_check(default, pose_of)("a.jpg", stand, np.stack([stand, phone])).tolist() == [True, True]



def test_pose_bank_extra_widens_a_trial_runs_bank():
    """``--limit`` re-poses the first images; ``augment.pose_bank_size`` adds the next images of the
    chosen splits (after any ``real_fraction`` subset: the pool) until the bank holds that many."""
    from posegen.augment import pose_bank_extra

    pool = pd.DataFrame({"path": [f"{i:04d}_00.jpg" for i in range(10)] + ["q1.jpg", "q2.jpg"],
                         "pid": list(range(10)) + [1, 2], "split": ["train"] * 10 + ["query"] * 2})  # fmt: skip
    manifest = pool.head(3)
    got = pose_bank_extra(pool, manifest, ("train",), 6)
    assert got["path"].tolist() == ["0003_00.jpg", "0004_00.jpg", "0005_00.jpg"]  # the next ones, in order
    assert list(got.columns) == list(pool.columns)
    assert pose_bank_extra(pool, manifest, ("train",), None).empty  # off: the sources only
    assert pose_bank_extra(pool, manifest, ("train",), 3).empty  # the sources already fill it
    assert len(pose_bank_extra(pool, manifest, ("train",), 100)) == 7  # never the query images
    assert pose_bank_extra(pool, pool, ("train",), 100).empty  # no limit: every image is a source already
