"""`augment` end to end on real CUHK03 images: output tree, manifest, reasons, resume, safety."""

from __future__ import annotations

import pandas as pd
import pytest

from posegen.augment import OutputDirError, augment, summarize, synthetic_name
from posegen.data import load_dataset
from posegen.recipe import load_recipe

LIMIT, K, STEPS = 12, 2, 4


@pytest.fixture(scope="module")
def run(cuhk03_train, blazepose, tmp_path_factory):
    """One augment run with no --model: it trains the tiny recipe briefly on the 12 images first."""
    out = tmp_path_factory.mktemp("aug") / "out"
    before = sorted(p.name for p in cuhk03_train.iterdir())
    manifest = augment(
        cuhk03_train, out, recipe=load_recipe("tiny"), backend=blazepose, seed=3, k=K, limit=LIMIT,
        num_inference_steps=STEPS, train_steps=30,
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
        num_inference_steps=STEPS, train_steps=30, resume=True,
    )  # fmt: skip
    assert {rel: (out / rel).read_bytes() for rel in last["path"]} == images
    pd.testing.assert_frame_equal(
        resumed.sort_values(["source", "k", "path"]).reset_index(drop=True),
        manifest.sort_values(["source", "k", "path"]).reset_index(drop=True),
    )
