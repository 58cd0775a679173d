"""Batch re-posing from a pairs file: the library side of ``posegen repose --pairs``.

This is the pose-transfer evaluation protocol of PATN (Zhu et al. 2019), DPTN, PIDM (Bhunia et al.
2023) and CFLD: a Pose-Transfer pairs CSV (header ``from,to``, e.g. ``market-pairs-test.csv``) lists
``(source image, target image)`` names; every source person is generated in the pose annotated for
the target image, and the outputs are compared with the real target images afterwards.

:func:`repose_pairs` is a plain function over plain data: it reads the pairs and a poses file
(:func:`posegen.pose.formats.read_poses`: Parquet, Pose-Transfer CSV or COCO JSON), generates the
pairs in batches with a :class:`~posegen.repose.pipeline.ReposePipeline`, and writes

- ``OUT/<from stem>__<to stem>.png``: one image per pair, at the model's resolution, written
  atomically (so an existing file is always complete);
- ``OUT/pairs-manifest.csv``: one row per pair (written atomically after every batch).

Determinism: the noise of a pair comes from its own ``torch.Generator`` seeded with
``stable_seed(seed, from, to)``, so a pair's output does not depend on the batch size, on the
other pairs of its batch or on whether the run was resumed.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .._io import atomic_save_image, atomic_write, stable_seed
from ..data.images import ImageReadError, read_image
from ..pose.formats import read_poses

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_COLUMNS",
    "MARKET_CSV_SIZE",
    "read_pairs",
    "pair_output_name",
    "resolve_model_dir",
    "model_sample_config",
    "repose_pairs",
]

#: File name of the per-run manifest inside the output folder.
MANIFEST_NAME = "pairs-manifest.csv"

#: Columns of the manifest (:func:`repose_pairs`' return value).
MANIFEST_COLUMNS = ("from", "to", "output", "status", "reason", "seed")

#: ``(width, height)`` in pixels that Market-1501 Pose-Transfer CSV keypoints refer to: the
#: dataset's 64x128 (w x h) crops. Used for a target pose whose file records no image size and
#: whose target image is not in the images folder.
MARKET_CSV_SIZE = (64, 128)


def read_pairs(pairs: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """Read a Pose-Transfer pairs file (or check a frame) into ``from``/``to`` string columns.

    Args:
        pairs: a DataFrame with columns ``from`` and ``to``, or a CSV file with a header naming
            them (``from,to``, as in ``market-pairs-test.csv``; other columns, e.g. an unnamed
            index column, are ignored). Values are image names or paths relative to the images
            folder; surrounding spaces are stripped.

    Returns:
        A frame with exactly the columns ``from``, ``to`` (``str``), in file order, duplicate
        ``(from, to)`` rows dropped (the first is kept), index ``0..N-1``.

    Raises:
        FileNotFoundError: the file does not exist (named).
        ValueError: the ``from``/``to`` columns are missing, or a value is empty.
    """
    where = "pairs frame"
    if not isinstance(pairs, pd.DataFrame):
        where = str(pairs)
        if not Path(pairs).is_file():
            raise FileNotFoundError(f"pairs file not found: {pairs}")
        pairs = pd.read_csv(pairs, dtype=str, keep_default_na=False, skipinitialspace=True)
    cols = {str(c).strip(): c for c in pairs.columns}
    if "from" not in cols or "to" not in cols:
        raise ValueError(f"{where}: expected the columns 'from' and 'to' (a Pose-Transfer pairs CSV), got {list(cols)}")
    df = pd.DataFrame(
        {"from": pairs[cols["from"]].astype(str).str.strip(), "to": pairs[cols["to"]].astype(str).str.strip()}
    )
    empty = df.index[(df["from"] == "") | (df["to"] == "")]
    if len(empty):
        raise ValueError(f"{where}: empty 'from' or 'to' in row {int(empty[0]) + 1} (data rows counted from 1)")
    return df.drop_duplicates().reset_index(drop=True)


def pair_output_name(frm: str, to: str) -> str:
    """Output file name of a pair: ``<from stem>__<to stem>.png`` (stems of the names' last parts)."""
    return f"{PurePosixPath(frm.replace(os.sep, '/')).stem}__{PurePosixPath(to.replace(os.sep, '/')).stem}.png"


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """The saved pipeline folder of ``model``: a ``posegen train`` run folder (its ``model/``) or
    the pipeline folder itself; None = the default model shipped with posegen.

    Raises:
        FileNotFoundError: ``model`` does not exist (named).
    """
    if model is None:
        from .pipeline import default_model_dir

        model = default_model_dir()
    model = Path(model)
    if not model.exists():
        raise FileNotFoundError(f"model not found: {model}")
    if (model / "model" / "model_index.json").is_file():
        return model / "model"
    return model


def model_sample_config(model: str | os.PathLike):
    """The ``sample`` section (:class:`~posegen.recipe.SampleConfig`) of the recipe a model was
    trained with (``recipe.yaml`` in the model folder or its run folder), or None when there is none.

    Raises:
        posegen.recipe.RecipeError: the recipe file exists but is invalid.
    """
    from ..recipe import load_recipe

    model = Path(model)
    for path in (model / "recipe.yaml", model / "model" / "recipe.yaml", model.parent / "recipe.yaml"):
        if path.is_file():
            return load_recipe(path).sample
    return None


class _PoseIndex:
    """Look up poses rows by the image name of a pairs file."""

    def __init__(self, poses: pd.DataFrame):
        self.poses = poses.reset_index(drop=True)
        paths = self.poses["path"].astype(str).str.replace("\\", "/", regex=False)
        self.exact = {p: i for i, p in enumerate(paths)}
        names = paths.map(lambda p: PurePosixPath(p).name)
        counts = names.value_counts()
        self.by_name = {n: i for i, n in enumerate(names) if counts[n] == 1}
        self.ambiguous = set(counts.index[counts > 1])

    def find(self, name: str) -> tuple[pd.Series | None, str]:
        """``(row, "")`` or ``(None, why)``: exact path, else the unique row with that file name."""
        key = name.replace("\\", "/")
        if key in self.exact:
            return self.poses.iloc[self.exact[key]], ""
        base = PurePosixPath(key).name
        if base in self.by_name:
            return self.poses.iloc[self.by_name[base]], ""
        if base in self.ambiguous:
            return None, f"ambiguous: several poses are named {base!r}"
        return None, "not in the poses file"


@dataclass
class _Job:
    """One pair ready to generate."""

    row: int
    image: np.ndarray  # uint8 [H, W, 3]
    src_kp: np.ndarray  # float32 [17, 3], pixels of an image of src_size
    src_size: tuple[int, int]  # (w, h)
    tgt_kp: np.ndarray  # float32 [17, 3], pixels of an image of tgt_size
    tgt_size: tuple[int, int]  # (w, h)
    seed: int


def _known_size(row: pd.Series) -> tuple[int, int] | None:
    w, h = int(row["width"]), int(row["height"])
    return (w, h) if w > 0 and h > 0 else None


def _image_size(path: Path) -> tuple[int, int] | None:
    """``(w, h)`` from the file header, or None when it is not a readable image."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _pose_problem(row: pd.Series, min_score: float) -> str:
    if row["status"] != "ok":
        return f"pose failed ({row['reason'] or 'no reason given'})"
    kp = np.asarray(row["keypoints"], dtype=np.float32)
    if not (kp[:, 2] >= min_score).any():
        return f"empty pose (no joint with score >= {min_score})"
    return ""


def _guidance_kwargs(pipe, pose_guidance_scale, appearance_guidance_scale) -> dict:
    wanted = {"pose_guidance_scale": pose_guidance_scale, "appearance_guidance_scale": appearance_guidance_scale}
    wanted = {k: float(v) for k, v in wanted.items() if v is not None}
    accepted = inspect.signature(pipe.__call__).parameters
    # 1.0 = no guidance: fine for a model without classifier-free guidance (the latent model)
    unsupported = [k for k in wanted if k not in accepted and wanted[k] != 1.0]
    if unsupported:
        raise ValueError(f"this {type(pipe).__name__} does not support {', '.join(unsupported)}")
    return {k: v for k, v in wanted.items() if k in accepted}


def _write_manifest(rows: list[dict], path: Path) -> None:
    df = pd.DataFrame([r for r in rows if r is not None], columns=list(MANIFEST_COLUMNS))
    atomic_write(path, lambda p: df.to_csv(p, index=False))


def repose_pairs(
    pairs: pd.DataFrame | str | os.PathLike,
    poses: pd.DataFrame | str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    pipe,
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 16,
    limit: int | None = None,
    backend=None,
    min_score: float | None = None,
    default_target_size: tuple[int, int] = MARKET_CSV_SIZE,
    pose_guidance_scale: float | None = None,
    appearance_guidance_scale: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Re-pose the source image of every ``(from, to)`` pair into the pose of ``to``.

    Source image: ``images_dir/<from>`` (``from`` may be a name, a path relative to ``images_dir``,
    or an absolute path). Source keypoints: the poses row of ``from``; when it has none (or a failed
    or empty one) and ``backend`` is given, they are estimated on the source image, else the pair
    fails. Target keypoints: the poses row of ``to`` (the target image itself is not needed).
    Rows are matched on the poses ``path`` exactly, else on a unique file name.

    Keypoints are COCO-17 ``float32 [17, 3]`` ``(x, y, score)`` in pixels of the image they were
    measured on, x right, y down. The image size they refer to is the poses row's
    ``width``/``height``; Pose-Transfer CSVs record none (``-1``), then the source pose refers to
    the source image and the target pose to ``images_dir/<to>`` when that image exists, else to
    ``default_target_size``: the Market-1501 CSV convention, keypoints in a 64x128 (w x h) image.

    Args:
        pairs: a ``from,to`` frame or Pose-Transfer pairs CSV (see :func:`read_pairs`).
        poses: a poses DataFrame (:mod:`posegen.pose.formats`) or a file :func:`read_poses` reads.
        images_dir: folder of the source images.
        out_dir: output folder (created); holds ``<from stem>__<to stem>.png`` and
            :data:`MANIFEST_NAME`.
        pipe: a loaded :class:`~posegen.repose.pipeline.ReposePipeline` (its scheduler is used).
        steps: sampling steps per image.
        seed: run seed; pair ``(from, to)`` uses noise seed ``stable_seed(seed, from, to)``.
        batch_size: pairs per pipeline call (does not change any output).
        limit: only the first ``limit`` pairs (after dropping duplicate rows).
        backend: optional :class:`~posegen.pose.backends.PoseBackend` to estimate source poses that
            the poses file lacks.
        min_score: a joint is present at this score (a pose with none is "empty"); default the
            model's ``unet.config.min_score`` (else 0.5).
        default_target_size: ``(width, height)`` for target poses of unknown image size (above).
        pose_guidance_scale, appearance_guidance_scale: passed to the pipeline when not None
            (classifier-free guidance scales; the pipeline must accept them).
        progress: called ``progress(done, total)`` as pairs are resolved (total = pairs to do).

    Returns:
        The manifest, one row per pair in file order, columns :data:`MANIFEST_COLUMNS`:
        ``output`` (file name inside ``out_dir``; ``""`` when failed), ``status`` (``"ok"``
        generated now, ``"skipped-existing"`` the output already existed and was kept, ``"failed"``),
        ``reason`` (why it failed, ``""`` otherwise), ``seed`` (the pair's noise seed). It is also
        written to ``out_dir/pairs-manifest.csv``.

    Raises:
        FileNotFoundError: the pairs/poses file or ``images_dir`` is missing (named).
        ValueError: a malformed pairs/poses file, ``batch_size``/``steps``/``limit`` < 1, or a
            guidance scale the pipeline does not accept.

    Per-pair problems (missing or unreadable source image, missing, failed or empty pose, no
    person found by ``backend``, two pairs with the same output name) never raise: the pair gets
    ``status="failed"`` and a reason, and the run goes on.
    """
    from ..pose.backends import NoPersonFound

    if int(batch_size) < 1 or int(steps) < 1:
        raise ValueError(f"batch_size and steps must be >= 1, got {batch_size} and {steps}")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    pair_df = read_pairs(pairs)
    if limit is not None:
        pair_df = pair_df.head(int(limit))
    pose_df = poses if isinstance(poses, pd.DataFrame) else read_poses(poses)
    index = _PoseIndex(pose_df)
    if min_score is None:
        min_score = float(getattr(pipe.unet.config, "min_score", 0.5))
    extra = _guidance_kwargs(pipe, pose_guidance_scale, appearance_guidance_scale)
    if getattr(pipe, "returns_source_size", False):
        extra["align"] = False  # the protocol's target pose is where the real target image has it
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME

    total = len(pair_df)
    rows: list[dict | None] = [None] * total
    done = 0
    owner: dict[str, int] = {}  # output name -> first pair row using it
    batch: list[_Job] = []

    def finish(i: int, status: str, reason: str = "", output: str = "") -> None:
        nonlocal done
        frm, to = pair_df.at[i, "from"], pair_df.at[i, "to"]
        rows[i] = {"from": frm, "to": to, "output": output, "status": status, "reason": reason,
                   "seed": stable_seed(seed, frm, to)}  # fmt: skip
        done += 1
        if progress is not None:
            progress(done, total)

    def flush() -> None:
        if not batch:
            return
        result = pipe(
            source_images=[j.image for j in batch],
            source_keypoints=np.stack([j.src_kp for j in batch]),
            target_keypoints=np.stack([j.tgt_kp for j in batch]),
            source_sizes=[j.src_size for j in batch],
            target_sizes=[j.tgt_size for j in batch],
            num_inference_steps=int(steps),
            generator=[torch.Generator().manual_seed(j.seed) for j in batch],
            output_type="np",
            **extra,
        )
        images = result.images if hasattr(result, "images") else result  # a list when sizes differ
        for job, img in zip(batch, images):
            name = pair_output_name(pair_df.at[job.row, "from"], pair_df.at[job.row, "to"])
            atomic_save_image(Image.fromarray(img), out_dir / name)
            finish(job.row, "ok", output=name)
        batch.clear()
        _write_manifest(rows, manifest_path)

    if progress is not None:
        progress(0, total)
    for i in range(total):
        frm, to = pair_df.at[i, "from"], pair_df.at[i, "to"]
        name = pair_output_name(frm, to)
        if name in owner:
            first = pair_df.loc[owner[name]]
            finish(i, "failed", f"output name {name} is already used by the pair ({first['from']}, {first['to']})")
            continue
        owner[name] = i
        if (out_dir / name).is_file():
            finish(i, "skipped-existing", output=name)
            continue
        tgt_row, why = index.find(to)
        if tgt_row is None:
            finish(i, "failed", f"no target pose for {to!r}: {why}")
            continue
        problem = _pose_problem(tgt_row, min_score)
        if problem:
            finish(i, "failed", f"target {to!r}: {problem}")
            continue
        src_path = Path(frm) if Path(frm).is_absolute() else images_dir / frm
        try:
            image = read_image(src_path)
        except ImageReadError as e:
            finish(i, "failed", f"source image {src_path}: {e.reason}")
            continue
        img_size = (image.shape[1], image.shape[0])
        src_row, why = index.find(frm)
        if src_row is None:
            problem = f"no source pose for {frm!r} ({why})"
        else:
            problem = _pose_problem(src_row, min_score)
            problem = problem and f"source {frm!r}: {problem}"
        if not problem:
            src_kp, src_size = np.asarray(src_row["keypoints"], np.float32), _known_size(src_row) or img_size
        elif backend is not None:
            try:
                src_kp, src_size = np.asarray(backend.estimate(image), np.float32), img_size
            except NoPersonFound:
                finish(i, "failed", f"{problem}; {backend.name} found no person in the image")
                continue
            if not (src_kp[:, 2] >= min_score).any():
                finish(i, "failed", f"{problem}; {backend.name} found no joint with score >= {min_score}")
                continue
        else:
            finish(i, "failed", problem)
            continue
        tgt_size = _known_size(tgt_row)
        if tgt_size is None:
            to_path = Path(to) if Path(to).is_absolute() else images_dir / to
            tgt_size = (_image_size(to_path) if to_path.is_file() else None) or tuple(default_target_size)
        tgt_kp = np.asarray(tgt_row["keypoints"], np.float32)
        batch.append(_Job(i, image, src_kp, src_size, tgt_kp, tgt_size, stable_seed(seed, frm, to)))
        if len(batch) >= int(batch_size):
            flush()
    flush()
    _write_manifest(rows, manifest_path)
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
