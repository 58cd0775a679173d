"""Keypoint files: the **poses DataFrame** and its Parquet, Pose-Transfer CSV and COCO JSON files.

The poses DataFrame (one row per image; the contract every stage relies on):

=============  ========  ===========================================================================
column         dtype     meaning
=============  ========  ===========================================================================
``path``       str       key: the image path relative to the dataset root (POSIX); for Pose-Transfer
                         CSVs, the row's ``name`` (a file name)
``width``      int64     original image width in pixels, -1 when unknown (CSV files don't carry it)
``height``     int64     original image height in pixels, -1 when unknown
``keypoints``  object    each cell ``float32 [17, 3]``: COCO-17 ``(x, y, score)`` in pixels of the
                         original image (conventions: :mod:`posegen.pose.keypoints`); failed rows
                         hold :func:`~posegen.pose.keypoints.empty_keypoints` (all zeros)
``status``     str       ``"ok"`` or ``"failed"``
``reason``     str       ``""`` when ok, else why, e.g. ``"unreadable: not an image file"``
``backend``    str       what produced the pose, e.g. ``"blazepose-full"``, ``"pose-transfer-csv"``
``weights``    str       the model file, e.g. ``"mediapipe-bundled:pose_landmark_full.tflite"``, or ``""``
``neck``       object    optional, only for poses read from OpenPose-18 sources: each cell
                         ``float32 [3]`` ``(x, y, score)``, kept so that CSV -> frame -> CSV is lossless;
                         NaN (or None, e.g. after ``pd.concat`` with other frames) where not known
=============  ========  ===========================================================================

Files (the format follows the extension; see :func:`write_poses` and :func:`read_poses`):

- ``.parquet``: posegen's own format; all columns, ``keypoints`` stored as ``list<float32>`` of 51
  values (row-major ``[17, 3]``) and ``neck`` as 3 values.
- ``.csv``: a Pose-Transfer annotation file (PATN, DPTN, PIDM, CFLD), header
  ``name:keypoints_y:keypoints_x`` and rows ``img.jpg: [18 y]: [18 x]`` of integers in OpenPose-18
  order (:data:`~posegen.pose.keypoints.OPENPOSE18_NAMES`), ``-1`` for a missing joint.
- ``.json``: COCO keypoints (``images``, ``annotations``, ``categories``, ``info``).

A joint is *present* in a CSV or JSON file written here iff its score is ``>= min_score``
(:data:`DEFAULT_MIN_SCORE` = 0.5, the usual keypoint-visibility threshold); those formats carry no
(CSV) or an optional (JSON) score, so the joints below it are dropped.
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from posegen._io import atomic_write, atomic_write_text
from posegen.pose.keypoints import (
    COCO17_NAMES,
    COCO17_SKELETON,
    NUM_KEYPOINTS,
    coco17_to_openpose18,
    openpose18_to_coco17,
    validate_keypoints,
)

__all__ = [
    "POSE_COLUMNS",
    "POSE_FILE_EXTENSIONS",
    "DEFAULT_MIN_SCORE",
    "CSV_BACKEND",
    "new_poses_frame",
    "keypoints_array",
    "write_poses",
    "read_poses",
]

#: Columns of every poses DataFrame, in order (``neck`` may follow, see the module docstring).
POSE_COLUMNS = ("path", "width", "height", "keypoints", "status", "reason", "backend", "weights")

#: Extensions of the pose files :func:`read_poses` and :func:`write_poses` handle.
POSE_FILE_EXTENSIONS = (".parquet", ".csv", ".json")

#: Score from which a joint counts as present when writing CSV or JSON files.
DEFAULT_MIN_SCORE = 0.5

#: ``backend`` of poses read from a Pose-Transfer CSV.
CSV_BACKEND = "pose-transfer-csv"

_JSON_BACKEND = "coco-json"
_CSV_HEADER = "name:keypoints_y:keypoints_x"
_NO_KEYPOINTS = "no keypoints annotated"
_JSON_DECIMALS = 3  # coordinates and scores in JSON files: 1/1000 pixel, 1/1000 score
_STATUSES = ("ok", "failed")
_ROW_DEFAULTS = {"width": -1, "height": -1, "reason": "", "backend": "", "weights": ""}


def _cells(arr: np.ndarray) -> np.ndarray:
    """An object array of length N whose cells are the rows ``arr[i]`` (views) of ``arr`` ``[N, ...]``."""
    out = np.empty(len(arr), dtype=object)
    for i in range(len(arr)):
        out[i] = arr[i]
    return out


def _frame(path, width, height, keypoints, status, reason, backend, weights, neck=None) -> pd.DataFrame:
    """Build a poses frame from whole columns; ``keypoints`` is ``float32 [N, 17, 3]``, ``neck`` ``[N, 3]``."""
    columns = {
        "path": pd.Series(path, dtype=str),
        "width": np.asarray(width, dtype=np.int64),
        "height": np.asarray(height, dtype=np.int64),
        "keypoints": _cells(np.ascontiguousarray(keypoints, dtype=np.float32)),
        "status": pd.Series(status, dtype=str),
        "reason": pd.Series(reason, dtype=str),
        "backend": pd.Series(backend, dtype=str),
        "weights": pd.Series(weights, dtype=str),
    }
    if neck is not None:
        columns["neck"] = _cells(np.ascontiguousarray(neck, dtype=np.float32))
    return pd.DataFrame(columns)


def new_poses_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Build a poses DataFrame (dtypes per the module docstring) from one dict per image.

    Args:
        rows: dicts with keys ``path``, ``keypoints`` (anything :func:`validate_keypoints` accepts)
            and ``status`` (required), and optionally ``width``, ``height`` (default -1),
            ``reason``, ``backend``, ``weights`` (default ``""``) and ``neck`` (``[3]``; if any row has
            one, the frame gets a ``neck`` column and rows without one get NaN, i.e. not known).

    Returns:
        The frame, with columns :data:`POSE_COLUMNS` (+ ``neck``); zero rows give an empty frame
        with the same columns and dtypes.

    Raises:
        ValueError: a row lacks a required key, has an unknown key, a status other than ``"ok"`` /
            ``"failed"``, or keypoints that are not ``[17, 3]`` finite numbers.
    """
    rows = list(rows)
    allowed = set(POSE_COLUMNS) | {"neck"}
    for i, row in enumerate(rows):
        missing = {"path", "keypoints", "status"} - set(row)
        unknown = set(row) - allowed
        if missing or unknown:
            raise ValueError(f"pose row {i}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
        if row["status"] not in _STATUSES:
            raise ValueError(f"pose row {i}: status must be one of {_STATUSES}, got {row['status']!r}")
    filled = [{**_ROW_DEFAULTS, **row} for row in rows]
    keypoints = np.stack([validate_keypoints(r["keypoints"]) for r in filled]) if rows else _no_keypoints(0)
    neck = None
    if any("neck" in row for row in rows):
        neck = np.full((len(rows), 3), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            if "neck" in row:
                neck[i] = np.asarray(row["neck"], dtype=np.float32).reshape(3)
    column = {c: [r[c] for r in filled] for c in POSE_COLUMNS if c != "keypoints"}
    return _frame(
        [str(p) for p in column["path"]],
        column["width"],
        column["height"],
        keypoints,
        column["status"],
        column["reason"],
        column["backend"],
        column["weights"],
        neck=neck,
    )


def _no_keypoints(n: int) -> np.ndarray:
    """``float32 [n, 17, 3]`` of zeros."""
    return np.zeros((n, NUM_KEYPOINTS, 3), dtype=np.float32)


def keypoints_array(df: pd.DataFrame) -> np.ndarray:
    """The ``keypoints`` column as one array ``float32 [N, 17, 3]`` (COCO-17 x, y, score; pixels).

    Raises:
        ValueError: a cell is not a ``[17, 3]`` array.
    """
    if len(df) == 0:
        return _no_keypoints(0)
    cells = df["keypoints"].to_list()
    if any(np.shape(c) != (NUM_KEYPOINTS, 3) for c in cells):
        raise ValueError("every keypoints cell must be a [17, 3] array (COCO-17 x, y, score)")
    return np.stack(cells).astype(np.float32, copy=False)


def _neck_array(df: pd.DataFrame) -> np.ndarray:
    """The ``neck`` column as ``float32 [N, 3]``; NaN rows where a cell is not an array (not known)."""
    out = np.full((len(df), 3), np.nan, dtype=np.float32)
    for i, cell in enumerate(df["neck"]):
        if isinstance(cell, np.ndarray):
            out[i] = cell.reshape(3)
    return out


def _format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    if ext not in POSE_FILE_EXTENSIONS:
        raise ValueError(
            f"unsupported pose file extension {ext or '(none)'!r} for {path}; "
            f"supported: {', '.join(POSE_FILE_EXTENSIONS)}"
        )
    return ext


def write_poses(df: pd.DataFrame, path: str | os.PathLike, *, min_score: float = DEFAULT_MIN_SCORE) -> Path:
    """Write a poses DataFrame atomically; the format follows ``path``'s extension.

    - ``.parquet``: every column (extra ones included); lossless.
    - ``.csv`` (Pose-Transfer): ``name`` = the file name of the row's ``path``; joints with score ``>= min_score``
      are written as integers (rounded, and clamped to >= 0 since -1 means missing), the others as
      -1; failed rows are all -1. The neck is the row's ``neck`` cell when the frame has one that is
      not NaN (so a frame read from such a CSV is written back identically), else the midpoint of
      the shoulders (:func:`~posegen.pose.keypoints.coco17_to_openpose18`).
    - ``.json`` (COCO keypoints): all rows in ``images`` (``file_name`` = ``path``, plus
      ``posegen_status`` and ``posegen_reason``), an annotation for each ok row with ``v = 2`` for
      joints with score ``>= min_score`` and ``v = 0, x = y = 0`` for the others, the scores in
      ``keypoint_scores``, every joint as estimated (below ``min_score`` too) in
      ``posegen_keypoints`` (``[x, y, score] * 17``, so reading the file back is lossless up to
      rounding), ``bbox`` of the present joints; ``info`` holds ``backend``, ``weights``
      (the rows' distinct values joined by ``", "``) and ``min_score``. Values are rounded to 1/1000.

    Args:
        df: a poses DataFrame (columns :data:`POSE_COLUMNS`).
        path: destination file; parent folders are created.
        min_score: presence threshold for CSV and JSON (unused for Parquet).

    Returns:
        The destination path.

    Raises:
        ValueError: unsupported extension, missing columns, or (CSV) two rows with the same file
            name, or a file name containing ``":"`` or a line break.
    """
    ext = _format(path)
    missing = [c for c in POSE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"not a poses DataFrame: missing columns {missing}")
    if ext == ".parquet":
        return _write_parquet(df, path)
    if ext == ".csv":
        return _write_csv(df, path, min_score)
    return _write_json(df, path, min_score)


def read_poses(path: str | os.PathLike) -> pd.DataFrame:
    """Read a pose file written by :func:`write_poses` or by other tools; the format follows the extension.

    - ``.parquet``: the frame as written.
    - ``.csv`` (Pose-Transfer): ``path`` = the ``name`` field; present joints (both values >= 0;
      the files use -1 for missing) get score 1.0, missing ones ``(0, 0, 0)``; width and height -1;
      ``backend`` = :data:`CSV_BACKEND`, ``weights`` ``""``; a ``neck`` column is added. A row with
      no COCO-17 joint present is ``failed`` with reason ``"no keypoints annotated"``.
    - ``.json`` (COCO keypoints): ``path`` = ``file_name``; per image, the non-crowd annotation with
      the most joints with ``v > 0`` (the first on ties); a joint with ``v > 0`` gets its score from
      ``keypoint_scores`` when present, else 1.0, a joint with ``v = 0`` is ``(0, 0, 0)``; an
      annotation with ``posegen_keypoints`` (written by posegen) gives every joint from it. An image
      without annotation is ``failed`` with its ``posegen_reason`` (else ``"no annotation"``); one
      whose annotation has no joint is ``failed``, ``"no keypoints annotated"``. ``backend`` and
      ``weights`` come from ``info`` (default ``"coco-json"``, ``""``).

    Returns:
        A poses DataFrame (see the module docstring).

    Raises:
        ValueError: unsupported extension, or a file that does not parse (the message names the
            file and the line, or the JSON entry).
        FileNotFoundError: ``path`` does not exist.
    """
    ext = _format(path)
    if ext == ".parquet":
        return _read_parquet(path)
    if ext == ".csv":
        return _read_csv(path)
    return _read_json(path)


# --- Parquet -----------------------------------------------------------------------------------

_NESTED = {"keypoints": NUM_KEYPOINTS * 3, "neck": 3}


def _write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    arrays = {}
    for col in df.columns:
        if col in _NESTED:
            flat = (keypoints_array(df) if col == "keypoints" else _neck_array(df)).reshape(-1)
            offsets = np.arange(0, flat.size + 1, _NESTED[col], dtype=np.int32)
            arrays[col] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float32()))
        else:
            arrays[col] = pa.Array.from_pandas(df[col])
    table = pa.table(arrays)
    return atomic_write(path, lambda p: pq.write_table(table, p))


def _read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    table = pq.read_table(path)
    missing = [c for c in POSE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a poses file, missing columns {missing}")
    nested = [c for c in _NESTED if c in table.column_names]
    df = table.drop_columns(nested).to_pandas()
    for col in nested:
        lists = table.column(col).combine_chunks()
        size = _NESTED[col]
        if lists.null_count or np.any(np.diff(lists.offsets.to_numpy()) != size):
            raise ValueError(f"{path}: every {col!r} cell must hold {size} values")
        values = np.array(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)  # writable copy
        shape = (len(lists), NUM_KEYPOINTS, 3) if col == "keypoints" else (len(lists), 3)
        df.insert(table.column_names.index(col), col, _cells(values.reshape(shape)))
    return df.astype({"width": np.int64, "height": np.int64})


# --- Pose-Transfer CSV -------------------------------------------------------------------------


def _write_csv(df: pd.DataFrame, path: str | os.PathLike, min_score: float) -> Path:
    names = [posixpath.basename(str(p)) for p in df["path"]]
    bad = [n for n in names if ":" in n or "\n" in n or "\r" in n]
    if bad:
        raise ValueError(f"file names with ':' or a line break cannot be written to a CSV: {bad[:3]}")
    dup = pd.Series(names)[pd.Series(names).duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"Pose-Transfer CSVs are keyed by file name; several rows share {dup[:3]}")
    kp18 = coco17_to_openpose18(keypoints_array(df))
    if "neck" in df.columns:
        neck = _neck_array(df)
        known = ~np.isnan(neck).any(axis=1)
        kp18[known, 1] = neck[known]
    present = (kp18[..., 2] >= min_score) & (df["status"].to_numpy() == "ok")[:, None]
    xy = np.where(present[..., None], np.maximum(np.rint(kp18[..., :2]), 0), -1).astype(np.int64)
    lines = [_CSV_HEADER]
    for name, x, y in zip(names, xy[..., 0].tolist(), xy[..., 1].tolist()):
        lines.append(f"{name}: [{', '.join(map(str, y))}]: [{', '.join(map(str, x))}]")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_values(text: str) -> np.ndarray:
    """Parse ``"[v, v, ...]"`` into ``float64 [18]``; ValueError if malformed."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError("a keypoint list must be written [v, v, ...]")
    values = np.array(text[1:-1].split(","), dtype=np.float64)
    if values.shape != (18,) or not np.isfinite(values).all():
        raise ValueError(f"expected 18 finite numbers, got {text[:60]!r}")
    return values


def _read_csv(path: str | os.PathLike) -> pd.DataFrame:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].replace(" ", "") != _CSV_HEADER:
        raise ValueError(f"{path}:1: expected the Pose-Transfer header {_CSV_HEADER!r}")
    names, ys, xs = [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            name, y, x = line.split(":")
            if not name.strip():
                raise ValueError("empty name")
            ys.append(_csv_values(y))
            xs.append(_csv_values(x))
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: not a 'name: [18 y]: [18 x]' row ({e}): {line[:80]!r}") from None
        names.append(name.strip())
    n = len(names)
    y = np.array(ys, dtype=np.float32).reshape(n, 18)
    x = np.array(xs, dtype=np.float32).reshape(n, 18)
    present = (x >= 0) & (y >= 0)
    kp18 = np.where(present[..., None], np.stack([x, y, np.ones_like(x)], axis=-1), np.float32(0))
    kp17, neck = openpose18_to_coco17(kp18)
    ok = (kp17[..., 2] > 0).any(axis=1)
    return _frame(
        names,
        np.full(n, -1),
        np.full(n, -1),
        kp17,
        np.where(ok, "ok", "failed"),
        np.where(ok, "", _NO_KEYPOINTS),
        [CSV_BACKEND] * n,
        [""] * n,
        neck=neck,
    )


# --- COCO keypoints JSON -----------------------------------------------------------------------


def _joined(values: pd.Series) -> str:
    return ", ".join(sorted(set(values.astype(str))))


def _write_json(df: pd.DataFrame, path: str | os.PathLike, min_score: float) -> Path:
    kp = keypoints_array(df)
    present = kp[..., 2] >= min_score
    xy = np.round(np.where(present[..., None], kp[..., :2], 0).astype(np.float64), _JSON_DECIMALS)
    scores = np.round(kp[..., 2].astype(np.float64), _JSON_DECIMALS)
    images, annotations = [], []
    for i, row in enumerate(df[["path", "width", "height", "status", "reason"]].itertuples(index=False)):
        images.append(
            {
                "id": i + 1,
                "file_name": str(row.path),
                "width": int(row.width),
                "height": int(row.height),
                "posegen_status": str(row.status),
                "posegen_reason": str(row.reason),
            }
        )
        if row.status != "ok":
            continue
        vis = present[i]
        if vis.any():
            (x0, y0), (x1, y1) = xy[i][vis].min(axis=0), xy[i][vis].max(axis=0)
        else:
            x0 = y0 = x1 = y1 = 0.0
        w, h = round(x1 - x0, _JSON_DECIMALS), round(y1 - y0, _JSON_DECIMALS)
        coords = xy[i].tolist()
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": 1,
                "keypoints": [v for (px, py), p in zip(coords, vis.tolist()) for v in (px, py, 2 if p else 0)],
                "num_keypoints": int(vis.sum()),
                "keypoint_scores": scores[i].tolist(),
                # every joint as estimated (x, y, score), below min_score too: a resumed run or a
                # reader that knows posegen gets the frame back (COCO readers ignore the field)
                "posegen_keypoints": np.round(kp[i].astype(np.float64), _JSON_DECIMALS).reshape(-1).tolist(),
                "bbox": [float(x0), float(y0), w, h],
                "area": round(w * h, _JSON_DECIMALS),
                "iscrowd": 0,
            }
        )
    coco = {
        "info": {
            "description": "posegen poses (COCO-17 keypoints)",
            "backend": _joined(df["backend"]),
            "weights": _joined(df["weights"]),
            "min_score": float(min_score),
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {
                "id": 1,
                "name": "person",
                "supercategory": "person",
                "keypoints": list(COCO17_NAMES),
                "skeleton": [[a + 1, b + 1] for a, b in COCO17_SKELETON],
            }
        ],
    }
    return atomic_write_text(path, json.dumps(coco, separators=(",", ":")) + "\n")


def _read_json(path: str | os.PathLike) -> pd.DataFrame:
    try:
        coco = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{path}: not a COCO keypoints file (no 'images' list)")
    info = coco.get("info") or {}
    best: dict[object, tuple[int, np.ndarray]] = {}  # image id -> (joints with v > 0, [17, 3])
    for j, ann in enumerate(coco.get("annotations") or []):
        try:
            if ann.get("iscrowd", 0) or "keypoints" not in ann:
                continue
            trip = np.asarray(ann["keypoints"], dtype=np.float32).reshape(NUM_KEYPOINTS, 3)
            vis = trip[:, 2] > 0
            score = np.asarray(ann.get("keypoint_scores", np.ones(NUM_KEYPOINTS)), dtype=np.float32).reshape(-1)
            kp = np.where(vis[:, None], np.column_stack([trip[:, :2], score]), 0).astype(np.float32)
            if "posegen_keypoints" in ann:  # written by posegen: every joint, with its score
                kp = np.asarray(ann["posegen_keypoints"], dtype=np.float32).reshape(NUM_KEYPOINTS, 3)
            kp = validate_keypoints(kp)
            image_id = ann["image_id"]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{path}: annotations[{j}]: not a COCO-17 keypoint annotation ({e})") from None
        if image_id not in best or int(vis.sum()) > best[image_id][0]:
            best[image_id] = (int(vis.sum()), kp)
    paths, widths, heights, status, reason = [], [], [], [], []
    keypoints = _no_keypoints(len(coco["images"]))
    for i, img in enumerate(coco["images"]):
        try:
            paths.append(str(img["file_name"]))
            widths.append(int(img.get("width", -1)))
            heights.append(int(img.get("height", -1)))
            count, kp = best.get(img["id"], (-1, None))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{path}: images[{i}]: not a COCO image entry ({e})") from None
        if count > 0:
            keypoints[i] = kp
            status.append("ok")
            reason.append("")
        else:
            status.append("failed")
            reason.append(_NO_KEYPOINTS if count == 0 else (img.get("posegen_reason") or "no annotation"))
    n = len(paths)
    return _frame(
        paths,
        widths,
        heights,
        keypoints,
        status,
        reason,
        [str(info.get("backend", _JSON_BACKEND))] * n,
        [str(info.get("weights", ""))] * n,
    )
