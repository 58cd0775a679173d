"""Keypoint files (posegen.pose.formats): the poses DataFrame, Parquet, Pose-Transfer CSV, COCO JSON.

Real data: the Market-1501 Pose-Transfer annotation CSVs in ``../shared/data/market1501-keypoints``
beside the repository root; the tests that need them skip when they are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posegen.pose.formats import (
    CSV_BACKEND,
    POSE_COLUMNS,
    keypoints_array,
    new_poses_frame,
    read_poses,
    write_poses,
)
from posegen.pose.keypoints import COCO17_NAMES, COCO17_SKELETON, empty_keypoints

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KEYPOINTS = SHARED / "data" / "market1501-keypoints"
CSV_ROWS = {"train": 12936, "test": 19732}
NO_DATA = f"real Market-1501 keypoints not found at {KEYPOINTS} (../shared beside the repo root)"
needs_market = pytest.mark.skipif(not KEYPOINTS.is_dir(), reason=NO_DATA)


def csv_path(split: str) -> Path:
    return KEYPOINTS / f"market-annotation-{split}.csv"


def raw_csv_values(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Independent plain parser of a Pose-Transfer CSV: names, y int64 [N, 18], x int64 [N, 18]."""
    names, ys, xs = [], [], []
    for line in path.read_text().splitlines()[1:]:
        name, y, x = line.split(":")
        names.append(name.strip())
        ys.append([int(v) for v in y.strip()[1:-1].split(",")])
        xs.append([int(v) for v in x.strip()[1:-1].split(",")])
    return names, np.array(ys, dtype=np.int64), np.array(xs, dtype=np.int64)


@pytest.fixture(scope="module", params=sorted(CSV_ROWS))
def market(request) -> tuple[str, pd.DataFrame]:
    if not KEYPOINTS.is_dir():
        pytest.skip(NO_DATA)
    return request.param, read_poses(csv_path(request.param))


def assert_same_poses(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a["path"].tolist() == b["path"].tolist()
    assert a["status"].tolist() == b["status"].tolist()
    assert a["reason"].tolist() == b["reason"].tolist()
    np.testing.assert_array_equal(keypoints_array(a), keypoints_array(b))


# --- the frame -----------------------------------------------------------------------------------


def test_new_poses_frame_dtypes_and_defaults():
    kp = empty_keypoints()
    kp[0] = (10.5, 20.25, 0.9)
    df = new_poses_frame(
        [
            {"path": "a/1.jpg", "keypoints": kp, "status": "ok", "width": 64, "height": 128, "backend": "b"},
            {"path": Path("a/2.jpg"), "keypoints": empty_keypoints().ravel(), "status": "failed",
             "reason": "no person found"},
        ]
    )
    assert list(df.columns) == list(POSE_COLUMNS)
    assert df["width"].dtype == np.int64 and df["height"].dtype == np.int64
    assert df["width"].tolist() == [64, -1] and df["reason"].tolist() == ["", "no person found"]
    assert df["path"].tolist() == ["a/1.jpg", "a/2.jpg"] and df["weights"].tolist() == ["", ""]
    cell = df["keypoints"].iloc[1]
    assert isinstance(cell, np.ndarray) and cell.shape == (17, 3) and cell.dtype == np.float32
    assert keypoints_array(df).shape == (2, 17, 3) and keypoints_array(df)[0, 0, 1] == np.float32(20.25)


def test_new_poses_frame_empty_and_errors():
    empty = new_poses_frame([])
    assert list(empty.columns) == list(POSE_COLUMNS) and len(empty) == 0
    assert empty["width"].dtype == np.int64
    assert keypoints_array(empty).shape == (0, 17, 3)
    with pytest.raises(ValueError, match="unknown keys"):
        new_poses_frame([{"path": "a", "keypoints": empty_keypoints(), "status": "ok", "score": 1}])
    with pytest.raises(ValueError, match="status must be one of"):
        new_poses_frame([{"path": "a", "keypoints": empty_keypoints(), "status": "done"}])
    with pytest.raises(ValueError, match=r"shape \[17, 3\]"):
        new_poses_frame([{"path": "a", "keypoints": np.zeros((18, 3)), "status": "ok"}])


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".json"])
def test_empty_frame_round_trips(tmp_path, ext):
    back = read_poses(write_poses(new_poses_frame([]), tmp_path / f"p{ext}"))
    assert len(back) == 0 and list(back.columns)[: len(POSE_COLUMNS)] == list(POSE_COLUMNS)
    assert back["width"].dtype == np.int64


def test_parquet_round_trip_keeps_everything(tmp_path):
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 60, size=(3, 17, 3)).astype(np.float32)
    rows = [
        {"path": f"x/{i}.jpg", "keypoints": kp[i], "status": "ok", "width": 64, "height": 128,
         "backend": "blazepose-full", "weights": "mediapipe-bundled:pose_landmark_full.tflite"}
        for i in range(3)
    ]  # fmt: skip
    df = new_poses_frame(rows)
    df["extra"] = [1.5, 2.5, 3.5]
    back = read_poses(write_poses(df, tmp_path / "p.parquet"))
    assert list(back.columns) == list(df.columns)
    assert back.drop(columns="keypoints").equals(df.drop(columns="keypoints"))
    np.testing.assert_array_equal(keypoints_array(back), kp)
    assert back["keypoints"].iloc[0].flags.writeable


# --- Pose-Transfer CSV ---------------------------------------------------------------------------


def test_read_real_csv(market):
    split, df = market
    assert len(df) == CSV_ROWS[split]
    assert list(df.columns) == [*POSE_COLUMNS, "neck"]
    assert set(df["backend"]) == {CSV_BACKEND} and set(df["weights"]) == {""}
    assert set(df["width"]) == {-1} and set(df["height"]) == {-1}
    names, y, x = raw_csv_values(csv_path(split))
    assert df["path"].tolist() == names
    none_annotated = ((y == -1) & (x == -1)).all(axis=1)
    assert none_annotated.any()
    assert (df["status"] == "failed").tolist() == none_annotated.tolist()
    assert set(df.loc[none_annotated, "reason"]) == {"no keypoints annotated"}
    assert set(df.loc[~none_annotated, "reason"]) == {""}
    kp = keypoints_array(df)
    assert (kp[none_annotated] == 0).all()
    assert set(np.unique(kp[..., 2])) == {0.0, 1.0}
    assert (kp[..., 0] <= 63).all() and (kp[..., 1] <= 127).all()  # 64x128 images, x right, y down


@needs_market
def test_known_row_openpose_to_coco():
    df = read_poses(csv_path("train")).set_index("path")
    kp = df.at["0647_c1s4_004056_01.jpg", "keypoints"]
    neck = df.at["0647_c1s4_004056_01.jpg", "neck"]
    # OpenPose row: y [9, 25, 25, 47, 62, 24, 44, 63, 62, 86, 109, 63, 87, 108, -1, 6, -1, 8]
    #               x [18, 32, 24, 24, 18, 40, 41, 38, 26, 31, 43, 34, 24, 47, -1, 21, -1, 31]
    name = dict(zip(COCO17_NAMES, kp.tolist()))
    assert name["nose"] == [18, 9, 1]
    assert name["right_shoulder"] == [24, 25, 1] and name["left_shoulder"] == [40, 24, 1]
    assert name["right_eye"] == [0, 0, 0] and name["left_eye"] == [21, 6, 1]
    assert name["right_ear"] == [0, 0, 0] and name["left_ear"] == [31, 8, 1]
    assert name["left_ankle"] == [47, 108, 1]
    assert neck.tolist() == [32, 25, 1]


@needs_market
def test_all_missing_row_is_failed():
    df = read_poses(csv_path("test")).set_index("path")
    row = df.loc["0000_c1s3_022226_03.jpg"]
    assert (row["status"], row["reason"]) == ("failed", "no keypoints annotated")
    assert (row["keypoints"] == 0).all() and row["keypoints"].dtype == np.float32


def test_csv_round_trip_is_lossless(market, tmp_path):
    split, df = market
    out = tmp_path / f"{split}.csv"
    write_poses(df, out)
    back = read_poses(out)
    assert_same_poses(df, back)
    np.testing.assert_array_equal(np.stack(back["neck"].tolist()), np.stack(df["neck"].tolist()))
    names, y, x = raw_csv_values(csv_path(split))
    names2, y2, x2 = raw_csv_values(out)
    assert names2 == names
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(x2, x)


def test_parquet_then_csv_gives_the_same_csv(market, tmp_path):
    split, df = market
    first = write_poses(df, tmp_path / "first.csv")
    pq = read_poses(write_poses(df, tmp_path / "poses.parquet"))
    assert_same_poses(df, pq)
    assert pq.drop(columns=["keypoints", "neck"]).equals(df.drop(columns=["keypoints", "neck"]))
    second = write_poses(pq, tmp_path / "second.csv")
    assert second.read_text().splitlines() == first.read_text().splitlines()


def test_csv_to_json_keeps_present_joints(market, tmp_path):
    split, df = market
    back = read_poses(write_poses(df, tmp_path / "poses.json"))
    assert back["path"].tolist() == df["path"].tolist()
    assert back["status"].tolist() == df["status"].tolist()
    assert set(back["backend"]) == {CSV_BACKEND}
    kp, kp2 = keypoints_array(df), keypoints_array(back)
    present = kp[..., 2] > 0
    np.testing.assert_array_equal(kp2[..., 2] > 0, present)
    np.testing.assert_array_equal(kp2[present][:, :2], kp[present][:, :2])


@needs_market
def test_read_csv_reads_the_whole_market_test_annotations():
    """The 19,732-row Market-1501 test annotations parse (its speed is a benchmark matter, not a test's)."""
    df = read_poses(csv_path("test"))
    assert len(df) == 19732 and keypoints_array(df).shape == (19732, 17, 3)


def _scored_frame() -> pd.DataFrame:
    kp = empty_keypoints()
    kp[5] = (40.4, 24.6, 0.9)  # left shoulder, present
    kp[6] = (20.0, 25.0, 0.3)  # right shoulder, below min_score
    kp[0] = (-0.7, 3.0, 0.8)  # nose just outside the left border: clamped to 0 in CSV
    failed = empty_keypoints()
    return new_poses_frame(
        [
            {"path": "a/1.jpg", "keypoints": kp, "status": "ok", "width": 64, "height": 128, "backend": "bp"},
            {"path": "a/2.jpg", "keypoints": failed, "status": "failed", "reason": "unreadable: not an image file",
             "width": 50, "height": 100, "backend": "bp"},
        ]
    )  # fmt: skip


def test_write_csv_min_score_and_failed_rows(tmp_path):
    out = write_poses(_scored_frame(), tmp_path / "p.csv")
    lines = out.read_text().splitlines()
    assert lines[0] == "name:keypoints_y:keypoints_x"
    # OpenPose order: nose, neck, r-shoulder, ..., l-shoulder (5); neck needs both shoulders.
    rest = ", -1" * 12
    assert lines[1] == f"1.jpg: [3, -1, -1, -1, -1, 25{rest}]: [0, -1, -1, -1, -1, 40{rest}]"
    assert lines[2] == "2.jpg: [" + ", ".join(["-1"] * 18) + "]: [" + ", ".join(["-1"] * 18) + "]"
    out2 = write_poses(_scored_frame(), tmp_path / "p2.csv", min_score=0.2)
    assert read_poses(out2)["neck"].iloc[0].tolist() == [30, 25, 1]


def test_csv_frame_concatenated_with_detector_rows(tmp_path):
    """A frame read from a CSV, extended with rows that have no neck (e.g. a resumed extraction)."""
    first = write_poses(_scored_frame(), tmp_path / "first.csv", min_score=0.2)
    merged = pd.concat([read_poses(first), _scored_frame().assign(path="b/3.jpg").iloc[:1]], ignore_index=True)
    assert not isinstance(merged["neck"].iloc[2], np.ndarray)
    for ext in (".csv", ".parquet"):
        back = read_poses(write_poses(merged, tmp_path / f"merged{ext}", min_score=0.2))
        assert len(back) == 3
    lines = (tmp_path / "merged.csv").read_text().splitlines()
    assert lines[3].replace("3.jpg", "1.jpg") == lines[1]  # unknown neck: derived from the shoulders


def test_write_csv_duplicate_basenames(tmp_path):
    df = new_poses_frame([{"path": f"{d}/img.jpg", "keypoints": empty_keypoints(), "status": "ok"} for d in "ab"])
    with pytest.raises(ValueError, match="share"):
        write_poses(df, tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_malformed_csv_names_the_line(tmp_path):
    good = "a.jpg: [" + ", ".join(["1"] * 18) + "]: [" + ", ".join(["2"] * 18) + "]"
    bad = tmp_path / "bad.csv"
    header = "name:keypoints_y:keypoints_x"
    bad.write_text("\n".join([header, good, good.replace("a.jpg", "b.jpg"), "c.jpg: [1, 2]: [3, 4]"]))
    with pytest.raises(ValueError, match=r"bad\.csv:4: .*expected 18 finite numbers"):
        read_poses(bad)
    bad.write_text("\n".join([header, good, "c.jpg [1, 2] [3, 4]"]))
    with pytest.raises(ValueError, match=r"bad\.csv:3: not a 'name: \[18 y\]: \[18 x\]' row"):
        read_poses(bad)
    bad.write_text("name,x,y\n" + good)
    with pytest.raises(ValueError, match=r"bad\.csv:1: expected the Pose-Transfer header"):
        read_poses(bad)


# --- COCO JSON -----------------------------------------------------------------------------------


def test_json_layout_and_round_trip(tmp_path):
    df = _scored_frame()
    out = write_poses(df, tmp_path / "p.json")
    coco = json.loads(out.read_text())
    assert coco["info"]["backend"] == "bp" and coco["info"]["weights"] == ""
    assert coco["images"][1] == {
        "id": 2, "file_name": "a/2.jpg", "width": 50, "height": 100,
        "posegen_status": "failed", "posegen_reason": "unreadable: not an image file",
    }  # fmt: skip
    (ann,) = coco["annotations"]
    assert ann["image_id"] == 1 and ann["category_id"] == 1 and ann["iscrowd"] == 0
    assert ann["num_keypoints"] == 2
    assert ann["keypoints"][0:3] == [-0.7, 3.0, 2] and ann["keypoints"][15:21] == [40.4, 24.6, 2, 0, 0, 0]
    assert ann["keypoint_scores"][6] == 0.3
    assert ann["bbox"] == [-0.7, 3.0, 41.1, 21.6] and ann["area"] == pytest.approx(41.1 * 21.6, abs=1e-3)
    (cat,) = coco["categories"]
    assert cat["keypoints"] == list(COCO17_NAMES) and len(cat["skeleton"]) == len(COCO17_SKELETON)
    assert min(min(pair) for pair in cat["skeleton"]) == 1
    back = read_poses(out)
    assert back["width"].tolist() == [64, 50] and back["backend"].tolist() == ["bp", "bp"]
    assert back["status"].tolist() == ["ok", "failed"]
    assert back["reason"].tolist() == ["", "unreadable: not an image file"]
    kp = back["keypoints"].iloc[0]
    np.testing.assert_allclose(kp[5], (40.4, 24.6, 0.9), atol=1e-5)
    np.testing.assert_allclose(kp[0], (-0.7, 3.0, 0.8), atol=1e-5)
    np.testing.assert_allclose(kp[6], (20.0, 25.0, 0.3), atol=1e-5)  # below min_score: kept (posegen_keypoints)


def test_read_foreign_coco_json(tmp_path):
    trip = [0] * 51
    trip[0:3] = [12, 7, 1]  # v = 1 (labelled, not visible) still counts as present
    two = list(trip)
    two[15:18] = [30, 20, 2]
    coco = {
        "images": [{"id": 10, "file_name": "p.jpg", "width": 64, "height": 128}, {"id": 11, "file_name": "q.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 10, "keypoints": trip},
            {"id": 2, "image_id": 10, "keypoints": two},
            {"id": 3, "image_id": 10, "keypoints": [1] * 51, "iscrowd": 1},
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    df = read_poses(path)
    assert df["status"].tolist() == ["ok", "failed"] and df["reason"].tolist() == ["", "no annotation"]
    assert df["height"].tolist() == [128, -1] and set(df["backend"]) == {"coco-json"}
    kp = df["keypoints"].iloc[0]
    assert kp[0].tolist() == [12, 7, 1] and kp[5].tolist() == [30, 20, 1] and kp[1:5].sum() == 0


def test_malformed_json(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"images": [\n{"id": 1,\n "file_name": }]}')
    with pytest.raises(ValueError, match=r"p\.json:3: invalid JSON"):
        read_poses(path)
    short = {"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 1, "keypoints": [1, 2]}]}
    path.write_text(json.dumps(short))
    with pytest.raises(ValueError, match=r"annotations\[0\]"):
        read_poses(path)


@pytest.mark.parametrize("name", ["poses.txt", "poses", "poses.csv.gz"])
def test_bad_extension(tmp_path, name):
    with pytest.raises(ValueError, match=r"supported: \.parquet, \.csv, \.json"):
        write_poses(new_poses_frame([]), tmp_path / name)
    with pytest.raises(ValueError, match=r"supported: \.parquet, \.csv, \.json"):
        read_poses(tmp_path / name)
