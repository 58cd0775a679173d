"""The ``deepfashion`` layout, fashion sizes through the default model, and the fashion pairs.

Fixture trees are built in ``tmp_path`` (names only, or tiny real JPEGs where images are read).
Real data: ``../shared/data/deepfashion-samples`` beside the repository root; tests that need it
(or the TAEF2 weights) skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posegen.data import LayoutError, detect_layout, load_dataset
from posegen.data.deepfashion import VIEWS, flat_to_tree, read_partition
from posegen.data.layouts import layout_files

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FASHION = SHARED / "data" / "deepfashion-samples"
TAEF2 = SHARED / "weights" / "taef2"
needs_fashion = pytest.mark.skipif(
    not (FASHION / "images").is_dir(), reason=f"real DeepFashion samples not found at {FASHION} (../shared beside the repo root)"
)
needs_taef2 = pytest.mark.skipif(
    not (TAEF2 / "taef2_encoder.pth").is_file(), reason=f"TAEF2 weights not found at {TAEF2} (../shared beside the repo root)"
)

TREE = [
    "img/MEN/Jackets_Vests/id_00004014/03_4_full.jpg",
    "img/MEN/Jackets_Vests/id_00004014/03_3_back.jpg",
    "img/MEN/Jackets_Vests/id_00004014/01_1_front.jpg",
    "img/WOMEN/Dresses/id_00000002/02_1_front.jpg",
    "img/WOMEN/Dresses/id_00000002/02_2_side.jpg",
    "img/WOMEN/Dresses/id_00000002/02_7_additional.jpg",
    "img/WOMEN/Dresses/id_00000002/02_6_flat.jpg",
]
PARTITION = """7
image_name item_id evaluation_status
img/MEN/Jackets_Vests/id_00004014/03_4_full.jpg id_00004014 train
img/MEN/Jackets_Vests/id_00004014/03_3_back.jpg id_00004014 train
img/MEN/Jackets_Vests/id_00004014/01_1_front.jpg id_00004014 train
img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 query
img/WOMEN/Dresses/id_00000002/02_2_side.jpg id_00000002 gallery
img/WOMEN/Dresses/id_00000002/02_7_additional.jpg id_00000002 gallery
img/WOMEN/Dresses/id_00000002/02_6_flat.jpg id_00000002 gallery
img/WOMEN/Dresses/id_00000099/01_1_front.jpg id_00000099 gallery
"""
FLAT = [
    "fashionMENJackets_Vestsid0000401403_4full.jpg",
    "fashionMENJackets_Vestsid0000401403_3back.jpg",
    "fashionWOMENDressesid0000000202_1front.jpg",
    "fashionWOMENDressesid0000000202_2side.jpg",
]


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def rows(df) -> dict:
    return {p: (pid, cam, split, ident) for p, pid, cam, split, ident in df[["path", "pid", "camid", "split", "identity"]].itertuples(index=False)}


# --- layout: release tree ----------------------------------------------------------------------


def test_tree_without_partition_is_all_train(tmp_path):
    touch(tmp_path, *TREE)
    assert detect_layout(tmp_path) == "deepfashion"
    df = load_dataset(tmp_path)
    assert df.attrs["layout"] == "deepfashion"
    r = rows(df)
    assert r["img/MEN/Jackets_Vests/id_00004014/03_4_full.jpg"] == (4014, VIEWS.index("full"), "train", "id_00004014")
    assert r["img/WOMEN/Dresses/id_00000002/02_7_additional.jpg"] == (2, 4, "train", "id_00000002")
    assert r["img/WOMEN/Dresses/id_00000002/02_6_flat.jpg"][1] == 5
    assert set(df["split"]) == {"train"} and not df["synthetic"].any()
    assert layout_files(tmp_path, "deepfashion") == []


@pytest.mark.parametrize("where", ["list_eval_partition.txt", "Eval/list_eval_partition.txt"])
def test_tree_with_partition_and_synthetic(tmp_path, where):
    touch(tmp_path, *TREE, "img/MEN/Jackets_Vests/id_00004014/03_4_full_pg01.jpg", "img/WOMEN/Dresses/id_00000002/02_2_side_pg02.jpg")
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text(PARTITION)
    df = load_dataset(tmp_path)
    r = rows(df)
    assert len(df) == len(TREE) + 2  # the listed but absent id_00000099 is ignored
    assert r["img/WOMEN/Dresses/id_00000002/02_1_front.jpg"][2] == "query"
    assert r["img/WOMEN/Dresses/id_00000002/02_2_side.jpg"][2] == "gallery"
    # a synthetic image parses like its source and takes its split
    assert r["img/MEN/Jackets_Vests/id_00004014/03_4_full_pg01.jpg"] == (4014, 3, "train", "id_00004014")
    assert r["img/WOMEN/Dresses/id_00000002/02_2_side_pg02.jpg"] == (2, 1, "gallery", "id_00000002")
    assert df.loc[df["path"].str.contains("_pg"), "synthetic"].all()
    assert df["synthetic"].sum() == 2
    assert layout_files(tmp_path, "deepfashion") == [where]
    assert layout_files(tmp_path, "cuhk03") == []


def test_partial_tree_names_what_was_expected(tmp_path):
    touch(tmp_path, *TREE[:2], "img/MEN/Jackets_Vests/photo1.jpg", "img/MEN/Jackets_Vests/id_00004014/front.jpg",
          "img/KIDS/Tops/id_00000001/01_1_front.jpg")  # fmt: skip
    with pytest.raises(LayoutError) as err:
        load_dataset(tmp_path, layout="deepfashion")
    msg = str(err.value)
    assert "is not a deepfashion dataset" in msg
    assert "only 2 of the 5 image files under img/ follow img/<MEN|WOMEN>/<Category>/id_<8 digits>/<NN>_<k>_<view>.jpg" in msg
    assert "front, side, back, full, additional, flat" in msg
    with pytest.raises(LayoutError) as err:  # detection lists it with the others
        detect_layout(tmp_path)
    assert "deepfashion: only 2 of the 5 image files under img/" in str(err.value)


def test_malformed_partition_is_a_layout_error(tmp_path):
    touch(tmp_path, *TREE)
    (tmp_path / "list_eval_partition.txt").write_text(PARTITION.replace("02_2_side.jpg id_00000002 gallery", "02_2_side.jpg id_00000002 test"))
    with pytest.raises(LayoutError, match=r"list_eval_partition.txt:7: expected 'img/<...>.jpg id_<8 digits> train\|query\|gallery'"):
        load_dataset(tmp_path)


def test_read_partition_keys_ignore_extension_and_synthetic_suffix(tmp_path):
    p = tmp_path / "list_eval_partition.txt"
    p.write_text(PARTITION)
    part = read_partition(p)
    assert part["img/WOMEN/Dresses/id_00000002/02_1_front"] == "query"
    assert len(part) == 8


# --- layout: flat Pose-Transfer naming ----------------------------------------------------------


def test_flat_names_in_the_root(tmp_path):
    touch(tmp_path, *FLAT, "fashionMENJackets_Vestsid0000401403_4full_pg03.jpg")
    assert detect_layout(tmp_path) == "deepfashion"
    r = rows(load_dataset(tmp_path))
    assert r["fashionMENJackets_Vestsid0000401403_4full.jpg"] == (4014, 3, "train", "id_00004014")
    assert r["fashionWOMENDressesid0000000202_2side.jpg"] == (2, 1, "train", "id_00000002")
    assert r["fashionMENJackets_Vestsid0000401403_4full_pg03.jpg"] == (4014, 3, "train", "id_00004014")


def test_flat_train_test_folders_not_read_as_generic(tmp_path):
    touch(tmp_path, *(f"train/{n}" for n in FLAT[:2]), *(f"test/{n}" for n in FLAT[2:]), "test/readme.txt")
    assert detect_layout(tmp_path) == "deepfashion"  # before generic, which would take train/ and test/ as two people
    df = load_dataset(tmp_path)
    assert dict(zip(df["path"], df["split"])) == {
        "test/fashionWOMENDressesid0000000202_1front.jpg": "gallery",
        "test/fashionWOMENDressesid0000000202_2side.jpg": "gallery",
        "train/fashionMENJackets_Vestsid0000401403_3back.jpg": "train",
        "train/fashionMENJackets_Vestsid0000401403_4full.jpg": "train",
    }


def test_flat_with_partition_maps_names_to_the_tree(tmp_path):
    touch(tmp_path, "fashionMENJackets_Vestsid0000401403_4full.jpg", "fashionWOMENDressesid0000000202_1front.jpg",
          "fashionWOMENDressesid0000000202_2side_pg01.jpg")  # fmt: skip
    (tmp_path / "list_eval_partition.txt").write_text(PARTITION)
    df = load_dataset(tmp_path)
    assert list(df["split"]) == ["train", "query", "gallery"]
    assert layout_files(tmp_path, "deepfashion") == ["list_eval_partition.txt"]


def test_flat_to_tree():
    assert flat_to_tree("fashionMENJackets_Vestsid0000401403_4full.jpg") == "img/MEN/Jackets_Vests/id_00004014/03_4_full"
    assert flat_to_tree("fashionWOMENBlouses_Shirtsid0000000101_7additional_pg02.png") == "img/WOMEN/Blouses_Shirts/id_00000001/01_7_additional"
    assert flat_to_tree("fashionKIDSTopsid0000000101_1front.jpg") is None
    assert flat_to_tree("fashionMENTeesid00001_1front.jpg") is None


def test_mostly_wrong_flat_names(tmp_path):
    touch(tmp_path, FLAT[0], "fashionMENJackets_Vestsid00004014_4full.jpg", "fashionMENTeesid0000401403_4top.jpg")
    with pytest.raises(LayoutError) as err:
        load_dataset(tmp_path, layout="deepfashion")
    msg = str(err.value)
    assert "only 1 of the 3 image files in the root are named fashion<MEN|WOMEN><Category>id<8 digits><NN>_<k><view>.jpg" in msg
    with pytest.raises(LayoutError, match="deepfashion: only 1 of the 3"):
        detect_layout(tmp_path)


def test_nothing_fashion_like(tmp_path):
    touch(tmp_path, "alice/1.jpg")
    assert detect_layout(tmp_path) == "generic"
    with pytest.raises(LayoutError, match=r"not a deepfashion dataset: no img/ folder \(img/<MEN\|WOMEN>/"):
        load_dataset(tmp_path, layout="deepfashion")


@needs_fashion
def test_shared_samples_are_flat_deepfashion():
    df = load_dataset(FASHION / "images")
    assert df.attrs["layout"] == "deepfashion" and len(df) == 179
    assert df["pid"].nunique() == 83 and set(df["split"]) == {"train"}
    assert set(df["camid"]) == set(range(len(VIEWS)))
    assert (df["identity"] == [f"id_{p:08d}" for p in df["pid"]]).all()
