"""Dataset layouts (posegen.data.layouts) and safe image reading (posegen.data.images).

Real data: ``../shared/data/cuhk03-detected`` beside the repository root; the tests that need it
skip when it is absent. Market-1501 and generic trees are built in ``tmp_path`` (names only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from posegen.data import (
    LAYOUTS,
    ImageReadError,
    LayoutError,
    detect_layout,
    is_synthetic_name,
    load_dataset,
    read_image,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DETECTED = SHARED / "data" / "cuhk03-detected" / "detected"
needs_cuhk03 = pytest.mark.skipif(
    not DETECTED.is_dir(), reason=f"real CUHK03 data not found at {DETECTED} (../shared beside the repo root)"
)


def touch(root: Path, *names: str) -> None:
    """Create empty files (and their folders) under ``root``."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def check_manifest(df: pd.DataFrame, layout: str, root: Path) -> None:
    """Columns, dtypes, attrs and order every manifest must have."""
    assert list(df.columns) == ["path", "pid", "camid", "split", "synthetic", "identity"]
    assert df["pid"].dtype == np.int64 and df["camid"].dtype == np.int64
    assert df["synthetic"].dtype == bool
    assert all(isinstance(v, str) for col in ("path", "split", "identity") for v in df[col])
    assert df["path"].is_monotonic_increasing and df["path"].is_unique
    assert list(df.index) == list(range(len(df)))
    assert set(df["split"]) <= {"train", "query", "gallery"}
    assert df.attrs == {"root": str(root.resolve()), "layout": layout}
    assert all(not os.path.isabs(p) and "\\" not in p for p in df["path"])
    assert all((root / p).is_file() for p in df["path"])


# --- CUHK03 (real) -----------------------------------------------------------------------------


@needs_cuhk03
def test_cuhk03_train_val_folders():
    df = load_dataset(DETECTED)
    check_manifest(df, "cuhk03", DETECTED)
    assert detect_layout(DETECTED) == "cuhk03"
    val_names = sorted(os.listdir(DETECTED / "val"))
    n_view_a = sum(int(n.split("_")[1][:2]) < 5 for n in val_names)
    counts = df["split"].value_counts().to_dict()
    assert counts == {"train": 7239, "query": n_view_a, "gallery": len(val_names) - n_view_a}
    assert counts["query"] + counts["gallery"] == 938
    assert 0 < n_view_a < 938
    train, test = df[df["split"] == "train"], df[df["split"] != "train"]
    assert train["pid"].nunique() == 743 and test["pid"].nunique() == 100
    assert test["pid"].min() == 0  # val pids restart from 0000
    assert set(df.loc[df["split"] == "query", "camid"]) == {0}
    assert set(df.loc[df["split"] == "gallery", "camid"]) == {1}
    assert set(train["camid"]) == {0, 1}
    assert not df["synthetic"].any()
    first = df.iloc[0]
    assert (first["path"], first["pid"], first["camid"], first["identity"]) == ("train/0000_00.jpg", 0, 0, "0000")
    row = df[df["path"] == "val/0003_07.jpg"].iloc[0]
    assert (row["pid"], row["camid"], row["split"]) == (3, 1, "gallery")


@needs_cuhk03
def test_cuhk03_flat_folder():
    root = DETECTED / "train"
    df = load_dataset(root)
    check_manifest(df, "cuhk03", root)
    assert len(df) == 7239 and set(df["split"]) == {"train"}
    assert df["pid"].nunique() == 743
    assert df["path"].iloc[0] == "0000_00.jpg"
    camid_from_k = (df["path"].str.slice(5, 7).astype(int) >= 5).astype(np.int64)
    assert (df["camid"] == camid_from_k).all()


@needs_cuhk03
def test_cuhk03_forced_generic_uses_folders_as_identities():
    df = load_dataset(DETECTED, layout="generic")
    assert df.attrs["layout"] == "generic"
    assert df.groupby("identity")["pid"].first().to_dict() == {"train": 0, "val": 1}
    assert set(df["split"]) == {"train"} and set(df["camid"]) == {0}


def test_cuhk03_synthetic_and_mostly_matching(tmp_path):
    names = [f"{p:04d}_{k:02d}.jpg" for p in range(3) for k in (0, 1, 5, 6)]
    touch(tmp_path, *names, "0001_00_pg01.jpg", "notes.jpg")  # 1 of 14 does not match: skipped
    df = load_dataset(tmp_path)
    check_manifest(df, "cuhk03", tmp_path)
    assert len(df) == 13 and "notes.jpg" not in set(df["path"])
    assert df.loc[df["synthetic"], "path"].tolist() == ["0001_00_pg01.jpg"]
    touch(tmp_path, "a.jpg", "b.jpg")  # now 3 of 16 do not match (< 90 %)
    with pytest.raises(LayoutError, match=r"cuhk03: only 13 of the 16 image files"):
        load_dataset(tmp_path)


# --- Market-1501 (synthetic tree) ----------------------------------------------------------------


@pytest.fixture()
def market_root(tmp_path) -> Path:
    root = tmp_path / "Market-1501-v15.09.15"
    touch(
        root,
        "bounding_box_train/0002_c1s1_000451_03.jpg",
        "bounding_box_train/0002_c2s1_000301_01.jpg",
        "bounding_box_train/0002_c1s1_000451_03_pg01.jpg",
        "bounding_box_train/0007_c6s3_088217_02.png",
        "bounding_box_train/Thumbs.db",
        "bounding_box_test/-1_c1s1_000401_03.jpg",
        "bounding_box_test/0000_c6s1_000001_01.jpg",
        "bounding_box_test/0007_c3s3_064244_05.jpg",
        "bounding_box_test/unnamed.jpg",
        "bounding_box_test/.0007_c1s1_000000_00.jpg",
        "query/0007_c1s1_002301_00.jpg",
        "gt_bbox/0002_c1s1_000451_03.jpg",
        ".posegen/state/0002_c1s1_000451_03.jpg",
    )
    return root


def test_market1501_tree(market_root):
    df = load_dataset(market_root)
    check_manifest(df, "market1501", market_root)
    assert detect_layout(market_root) == "market1501"
    rows = {r.path: (r.pid, r.camid, r.split, r.synthetic, r.identity) for r in df.itertuples()}
    assert rows == {
        "bounding_box_test/0000_c6s1_000001_01.jpg": (0, 5, "gallery", False, "0000"),  # distractor kept
        "bounding_box_test/0007_c3s3_064244_05.jpg": (7, 2, "gallery", False, "0007"),
        "bounding_box_train/0002_c1s1_000451_03.jpg": (2, 0, "train", False, "0002"),
        "bounding_box_train/0002_c1s1_000451_03_pg01.jpg": (2, 0, "train", True, "0002"),
        "bounding_box_train/0002_c2s1_000301_01.jpg": (2, 1, "train", False, "0002"),
        "bounding_box_train/0007_c6s3_088217_02.png": (7, 5, "train", False, "0007"),
        "query/0007_c1s1_002301_00.jpg": (7, 0, "query", False, "0007"),
    }  # junk (-1), unparsable, hidden, non-image and gt_bbox/ files are skipped


def test_market1501_needs_matching_names(tmp_path):
    touch(tmp_path, "query/a.jpg", "query/b.jpg")
    with pytest.raises(LayoutError, match=r"not a market1501 dataset: query/ hold no images named like"):
        load_dataset(tmp_path, layout="market1501")


# --- generic -------------------------------------------------------------------------------------


def test_generic_layout(tmp_path):
    touch(
        tmp_path,
        "bob/x.jpg",
        "alice/img1.png",
        "alice/img1_pg02.png",
        "alice/notes.txt",
        "alice/deeper/ignored.jpg",
        "carol/readme.md",  # no images: not an identity
        ".posegen/cache/y.jpg",
        "alice/.thumb.jpg",
        "loose.jpg",
    )
    (tmp_path / "bob" / "x.jpg").write_text("not an image")  # names only: still listed
    df = load_dataset(tmp_path)
    check_manifest(df, "generic", tmp_path)
    assert df[["path", "pid", "identity", "synthetic"]].values.tolist() == [
        ["alice/img1.png", 0, "alice", False],
        ["alice/img1_pg02.png", 0, "alice", True],
        ["bob/x.jpg", 1, "bob", False],
    ]
    assert set(df["camid"]) == {0} and set(df["split"]) == {"train"}


def test_layout_override(market_root):
    df = load_dataset(market_root, layout="generic")
    assert df.attrs["layout"] == "generic"
    assert sorted(df["identity"].unique()) == ["bounding_box_test", "bounding_box_train", "gt_bbox", "query"]
    with pytest.raises(LayoutError, match="not a cuhk03 dataset") as err:
        load_dataset(market_root, layout="cuhk03")
    assert "market1501" not in str(err.value).replace(str(market_root), "")


def test_unknown_layout_name(market_root):
    with pytest.raises(ValueError, match="unknown dataset layout 'duke'") as err:
        load_dataset(market_root, layout="duke")
    assert all(name in str(err.value) for name in LAYOUTS)


# --- errors --------------------------------------------------------------------------------------


def test_empty_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    touch(tmp_path, "readme.txt", ".hidden/a.jpg")
    with pytest.raises(LayoutError, match="holds no images"):
        load_dataset(tmp_path)
    with pytest.raises(LayoutError, match="holds no images"):
        load_dataset(tmp_path, layout="generic")


def test_unrecognised_names_list_every_layout(tmp_path):
    touch(tmp_path, "cat.jpg", "dog.png", "bird.jpeg")
    for call in (load_dataset, detect_layout):
        with pytest.raises(LayoutError) as err:
            call(tmp_path)
        msg = str(err.value)
        assert str(tmp_path.resolve()) in msg
        assert "market1501: no bounding_box_train/, bounding_box_test/ or query/ folder" in msg
        assert "cuhk03: only 0 of the 3 image files in the root are named <pid>_<k>.<ext>" in msg
        assert "generic: no sub-folder containing images" in msg


def test_root_not_a_folder(tmp_path):
    with pytest.raises(LayoutError, match=r"nowhere is not a folder \(it does not exist\)"):
        load_dataset(tmp_path / "nowhere")
    touch(tmp_path, "file.jpg")
    with pytest.raises(LayoutError, match="file.jpg is not a folder"):
        detect_layout(tmp_path / "file.jpg")


def test_layout_error_is_value_error():
    assert issubclass(LayoutError, ValueError)
    assert LAYOUTS == ("market1501", "cuhk03", "deepfashion", "generic")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("0002_c1s1_000451_03_pg01.jpg", True),
        ("0000_00_pg03.jpg", True),
        ("alice/img1_pg02.png", True),
        ("0002_c1s1_000451_03.jpg", False),
        ("pg01/img.jpg", False),
        ("img_pg.jpg", False),
        ("img_pg01x.jpg", False),
    ],
)
def test_is_synthetic_name(name, expected):
    assert is_synthetic_name(name) is expected


# --- read_image ----------------------------------------------------------------------------------


@needs_cuhk03
def test_read_image_real_and_truncated_jpeg(tmp_path):
    src = DETECTED / "train" / "0000_00.jpg"
    img = read_image(src)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    data = src.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as err:
        read_image(cut)
    assert err.value.reason.startswith("unreadable")
    assert err.value.path == str(cut)


def test_read_image_text_file_named_jpg(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert err.value.reason == "unreadable: not an image file"


def test_read_image_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((12, 10, 4), dtype=np.uint8)
    rgba[:, :5] = (255, 0, 0, 0)  # transparent red
    rgba[:, 5:] = (0, 0, 255, 255)  # opaque blue
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    img = read_image(path)
    assert img.shape == (12, 10, 3) and img.dtype == np.uint8
    assert (img[:, :5] == 255).all()
    assert (img[:, 5:] == (0, 0, 255)).all()


def test_read_image_greyscale_to_three_channels(tmp_path):
    grey = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (16, 1))
    path = tmp_path / "g.png"
    Image.fromarray(grey, "L").save(path)
    img = read_image(path)
    assert img.shape == (16, 24, 3)
    for c in range(3):
        assert (img[..., c] == grey).all()


def test_read_image_too_small(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert err.value.reason.startswith("too small: 1x1")


def test_read_image_missing(tmp_path):
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "gone.jpg")
    assert err.value.reason.startswith("missing")
