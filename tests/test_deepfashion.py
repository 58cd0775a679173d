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


# --- garment identity -----------------------------------------------------------------------------


def _studio(colour_top, colour_bottom, *, bg=(235, 235, 235), shift=0, size=(256, 176)):
    """A plain-background 'photo': two coloured blocks (top, bottom garment) on ``bg``."""
    h, w = size
    im = np.full((h, w, 3), bg, np.uint8)
    im[40 + shift : 130 + shift, 50:126] = colour_top
    im[130 + shift : 230 + shift, 60:116] = colour_bottom
    return im


def test_colour_histogram_separates_garments_and_ignores_the_background():
    from posegen.filter.garment import ColourHistogramEmbedder

    emb = ColourHistogramEmbedder()
    red_blue = _studio((200, 30, 30), (30, 40, 160))
    moved = _studio((200, 30, 30), (30, 40, 160), shift=16, bg=(120, 120, 120))  # another place, grey studio
    green = _studio((30, 170, 40), (30, 40, 160))
    before = red_blue.copy()
    e = emb.embed([red_blue, moved, green])
    assert e.shape == (3, emb.dim) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > 0.95  # same garments, other background and place
    assert e[0] @ e[2] < 0.75  # the top changed colour
    assert (red_blue == before).all()  # inputs never modified
    fg = emb.foreground(red_blue)
    assert fg.shape == emb.size and 0.1 < fg.mean() < 0.5  # the background is not foreground
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        emb.embed([red_blue.astype(np.float32)])
    with pytest.raises(ValueError, match="three positive counts"):
        ColourHistogramEmbedder(bins=(0, 4, 4))


def test_recipe_selects_the_colour_histogram():
    from posegen.filter import load_embedder
    from posegen.filter.garment import ColourHistogramEmbedder
    from posegen.recipe import load_recipe

    rec = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "deepfashion.yaml")
    assert rec.name == "deepfashion" and rec.latent is not None
    assert rec.filter.reid_weights == "colour-histogram"
    assert isinstance(load_embedder(rec.filter.reid_weights), ColourHistogramEmbedder)
    with pytest.raises(FileNotFoundError):
        load_embedder("colour-histogramm")  # anything else is a file path


# --- fashion sizes through the default model ------------------------------------------------------


def test_fashion_photo_letterbox_is_not_stretched():
    from posegen.latent import letterbox_params

    box = letterbox_params((176, 256), (256, 128))
    assert box.inner == (128, 186) and box.pad == (0, 35)  # one scale: 128/176 = 186/256 (rounded)
    assert abs(box.scale[0] - box.scale[1]) < 0.005
    im = np.zeros((256, 176, 3), np.uint8)
    im[:, :88] = 255  # left half white: stays the left half through the frame
    frame = box.image_to_frame(im)
    assert frame.shape == (256, 128, 3)
    assert frame[128, 60].min() > 200 and frame[128, 68].max() < 50
    back = box.frame_to_image(frame)
    assert back.shape == im.shape
    assert np.abs(back.astype(int) - im.astype(int)).mean() < 3


def _require_default_model():
    from posegen.repose import default_model_dir

    if not (default_model_dir() / "model_index.json").is_file():
        pytest.fail(f"the default model is not shipped: {default_model_dir()}")


@needs_fashion
@needs_taef2
def test_repose_pairs_on_real_fashion_photos(tmp_path):
    """The pairs protocol on the first 3 shared fashion pairs with their ground-truth poses:
    outputs at the photos' 176x256, in the target's pose where the warp can move the person."""
    import pandas as pd

    from posegen.repose import load_pipeline
    from posegen.repose.batch import repose_pairs

    _require_default_model()
    pairs = pd.read_csv(FASHION / "pairs.csv").head(3)
    m = repose_pairs(pairs, FASHION / "annotations.csv", FASHION / "images", tmp_path, pipe=load_pipeline(None), steps=4)
    assert list(m["status"]) == ["ok"] * 3, m["reason"].tolist()
    for name in m["output"]:
        with Image.open(tmp_path / name) as im:
            assert im.size == (176, 256)
            a = np.asarray(im.convert("RGB"))
        assert a.std() > 10  # not blank


@needs_fashion
@needs_taef2
def test_augment_keeps_the_release_tree(tmp_path):
    """augment on a small In-shop release tree (6 real photos renamed into img/..., a partition
    file marking one item as query): OUT is again a deepfashion tree, synthetic images beside their
    sources with the source's pid / view / split, the partition file copied, query never re-posed."""
    import shutil

    from posegen.augment import augment
    from posegen.pose.backends import get_backend
    from posegen.recipe import load_recipe

    _require_default_model()
    names = sorted(p.name for p in (FASHION / "images").iterdir())[:6]
    root = tmp_path / "inshop"
    lines = []
    for i, n in enumerate(names):
        rel = flat_to_tree(n) + ".jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FASHION / "images" / n, root / rel)
        lines.append(f"{rel} {rel.split('/')[3]} {'query' if i >= 4 else 'train'}")
    (root / "list_eval_partition.txt").write_text(f"{len(lines)}\nimage_name item_id evaluation_status\n" + "\n".join(lines) + "\n")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    rec = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "deepfashion.yaml")
    out = tmp_path / "out"
    with get_backend("blazepose") as be:
        m = augment(root, out, recipe=rec, backend=be, k=2, seed=0, reid_weights=Path("colour-histogram"))  # as the CLI passes it
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # DIR untouched
    assert (out / "list_eval_partition.txt").read_text() == (root / "list_eval_partition.txt").read_text()
    df = load_dataset(out)
    assert df.attrs["layout"] == "deepfashion"
    real = df[~df["synthetic"]].set_index("path")
    assert len(real) == 6 and list(real["split"]).count("query") == 2
    syn = df[df["synthetic"]]
    kept = m[m["synthetic"] & m["kept"]]
    assert len(syn) == len(kept) >= 1
    for _, r in syn.iterrows():
        src = real.loc[r["path"].replace(r["path"][r["path"].rindex("_pg") : -4], "")]
        assert (r["pid"], r["camid"], r["split"]) == (src["pid"], src["camid"], "train")
        with Image.open(out / r["path"]) as im:
            assert im.size == (176, 256)
    gen = m[m["synthetic"] & (m["k"] > 0)]
    assert len(gen) > 0 and not gen["source"].isin(real.index[real["split"] == "query"]).any()
    assert gen["identity_sim"].notna().any()  # the colour-histogram identity check ran
    assert (out / "report.html").is_file()


def test_release_root_with_img_and_eval_folders(tmp_path):
    touch(tmp_path, *(f"Img/{n}" for n in TREE), "Anno/list_bbox_inshop.txt")
    (tmp_path / "Eval").mkdir()
    (tmp_path / "Eval" / "list_eval_partition.txt").write_text(PARTITION)
    df = load_dataset(tmp_path)
    assert df.attrs["layout"] == "deepfashion" and len(df) == len(TREE)
    r = rows(df)
    assert r["Img/img/WOMEN/Dresses/id_00000002/02_1_front.jpg"] == (2, 0, "query", "id_00000002")
    assert layout_files(tmp_path, "deepfashion") == ["Eval/list_eval_partition.txt"]
