"""Training and test sets for the downstream re-ID evaluation, built from posegen manifests.

Everything here is plain pandas over manifests (see :mod:`posegen.data.layouts`); no image is
decoded except by :func:`make_flip_synthetic`, and torchreid is not imported.

Conventions
-----------
- **Real dataset** (``--data``): :func:`posegen.data.load_dataset` on a folder holding the train
  split *and* the query/gallery splits (Market-1501 root; CUHK03 ``detected/`` with ``train/`` and
  ``val/``). Files following posegen's synthetic naming (``*_pg<k>.*``) are dropped from it.
- **Identity key**: pids are compared within a *pid space*. Market-1501 and generic folders number
  train and test identities in one space (Market-1501's 751 train and 750 test identities are
  disjoint). CUHK03 as laid out in ``../shared`` restarts pids at 0 in ``val/``: train pid 3 and
  test pid 3 are different people, so there the pid check compares a synthetic image's pid with its
  source's pid only, and test identities are guarded through the sources (see :func:`check_leaks`).
- **Synthetic set**: an augment OUT folder (``OUT/manifest.parquet``; only rows with
  ``synthetic & kept`` and a non-empty ``path``, relative to OUT) or the flip stand-in of
  :func:`make_flip_synthetic` (same format). Each synthetic row's ``source`` (relative to the augment
  input DIR, recorded in ``OUT/.posegen/run.json`` as ``root``) is mapped onto the real dataset's
  ``path`` column as ``real_path``.
- **Training labels**: torchreid's softmax classifier wants contiguous 0-based labels; the kept real
  training pids are relabelled ``0..C-1`` in increasing pid order (:func:`relabel`). Synthetic and
  duplicated images take their source's label; camids are kept as they are. Test pids and camids are
  never relabelled (evaluation only compares them for equality).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from .._io import atomic_save_image, atomic_to_parquet, atomic_write_json, stable_seed
from ..data import load_dataset

__all__ = [
    "ARMS",
    "LeakError",
    "TrainSet",
    "RealData",
    "load_real",
    "subsample_real",
    "load_synthetic",
    "make_flip_synthetic",
    "check_leaks",
    "relabel",
    "build_train_sets",
]

#: The three arms of the comparison, in report order.
ARMS: tuple[str, ...] = ("real", "synthetic", "duplicate")

_TEST_SPLITS = ("query", "gallery")


class LeakError(ValueError):
    """A synthetic image would leak test information into training (or cannot be verified not to).

    The message gives, per reason, the number of offending synthetic images and a few examples.
    """


@dataclass
class RealData:
    """The real dataset split for the protocol.

    Attributes:
        root: absolute dataset root (str); manifest paths are relative to it.
        layout: the layout :func:`posegen.data.load_dataset` detected (or was given).
        train: manifest rows of split ``train`` (columns of :data:`posegen.data.MANIFEST_COLUMNS`).
        query: rows of split ``query``.
        gallery: rows of split ``gallery``.
        shared_pid_space: True when train and test pids are numbered in one space (see the module
            docstring); False for CUHK03 with ``train/`` + ``val/``.
        manifest: every real image of the folder, all splits, before ``max_train_pids`` /
            ``max_test_pids`` (synthetic sources and the leak check are resolved against it).
    """

    root: str
    layout: str
    train: pd.DataFrame
    query: pd.DataFrame
    gallery: pd.DataFrame
    shared_pid_space: bool
    manifest: pd.DataFrame


@dataclass
class TrainSet:
    """One arm's training set for one (fraction, seed).

    Attributes:
        arm: one of :data:`ARMS`.
        fraction: the ``--real-fraction`` it was drawn with.
        seed: the seed of the draw (and of the training run).
        rows: DataFrame with columns ``abs_path`` (str, absolute image path), ``label`` (int64,
            0-based contiguous training label), ``camid`` (int64), ``pid`` (int64, original pid),
            ``kind`` (``"real"``, ``"synthetic"`` or ``"duplicate"``), ``real_path`` (the real image
            it is or derives from, relative to the real root).
        num_classes: number of training identities (labels are ``0..num_classes-1``).
    """

    arm: str
    fraction: float
    seed: int
    rows: pd.DataFrame
    num_classes: int
    stats: dict = field(default_factory=dict)

    def as_torchreid(self) -> list[tuple[str, int, int]]:
        """The training list in torchreid's format: ``[(img_path, label, camid), ...]``."""
        return list(zip(self.rows["abs_path"], self.rows["label"].astype(int), self.rows["camid"].astype(int)))


def load_real(
    root: str | os.PathLike,
    layout: str | None = None,
    *,
    max_train_pids: int | None = None,
    max_test_pids: int | None = None,
) -> RealData:
    """Read the real dataset and split it into train / query / gallery.

    Args:
        root: dataset folder with all splits (Market-1501 root, CUHK03 ``detected/``, ...).
        layout: force a layout (see :func:`posegen.data.load_dataset`).
        max_train_pids: keep only the first N training identities (increasing pid) — a quick
            trial at small scale; None keeps all.
        max_test_pids: keep only the first N query identities (increasing pid) and the gallery
            images of those identities; None keeps the whole standard test set (Market-1501
            distractors included).

    Returns:
        :class:`RealData` (synthetic-named files dropped).

    Raises:
        posegen.data.LayoutError: the folder is not a dataset.
        ValueError: no training images, or no query or gallery images (the protocol needs all
            three; e.g. CUHK03 needs ``val/`` beside ``train/``).
    """
    df = load_dataset(root, layout)
    attrs = dict(df.attrs)
    df = df[~df["synthetic"]].reset_index(drop=True)
    train = df[df["split"] == "train"].reset_index(drop=True)
    query = df[df["split"] == "query"].reset_index(drop=True)
    gallery = df[df["split"] == "gallery"].reset_index(drop=True)
    if max_train_pids is not None:
        keep = np.sort(train["pid"].unique())[: max(int(max_train_pids), 1)]
        train = train[train["pid"].isin(keep)].reset_index(drop=True)
    if max_test_pids is not None:
        keep = np.sort(query["pid"].unique())[: max(int(max_test_pids), 1)]
        query = query[query["pid"].isin(keep)].reset_index(drop=True)
        gallery = gallery[gallery["pid"].isin(keep)].reset_index(drop=True)
    where = attrs["root"]
    if train.empty:
        raise ValueError(f"{where} has no training images (split 'train')")
    if query.empty or gallery.empty:
        raise ValueError(
            f"{where} has {len(query)} query and {len(gallery)} gallery images: the evaluation needs both "
            "(give the dataset folder with all splits, e.g. the Market-1501 root or CUHK03 detected/ with train/ and val/)"
        )
    layout_name = attrs["layout"]
    return RealData(
        root=attrs["root"],
        layout=layout_name,
        train=train,
        query=query,
        gallery=gallery,
        shared_pid_space=layout_name != "cuhk03",
        manifest=df,
    )


def subsample_real(train: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Keep ``fraction`` of the real training images, at least one per identity.

    Per pid with ``n`` images, ``max(1, floor(fraction * n + 0.5))`` images are kept: the first ones of a
    permutation seeded by :func:`posegen._io.stable_seed` ``(seed, "real-fraction", pid)``, so the
    draw is reproducible, independent of the other pids, and nested (the images kept at 0.2 are
    among those kept at 0.4 for the same seed).

    Args:
        train: real training manifest rows (``path``, ``pid``, ...).
        fraction: in ``(0, 1]``.
        seed: draw seed.

    Returns:
        The kept rows, in the input's order (index reset).

    Raises:
        ValueError: ``fraction`` outside ``(0, 1]``.
    """
    if not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"real fraction must be in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return train.reset_index(drop=True)
    keep = np.zeros(len(train), dtype=bool)
    positions = np.arange(len(train))
    for pid, idx in train.groupby("pid", sort=True).indices.items():
        n_keep = max(1, int(np.floor(float(fraction) * len(idx) + 0.5)))
        rng = np.random.default_rng(stable_seed(int(seed), "real-fraction", int(pid)))
        # order within the pid by path so the draw does not depend on the row order
        ordered = positions[idx][np.argsort(train["path"].to_numpy()[idx], kind="stable")]
        keep[rng.permutation(ordered)[:n_keep]] = True
    return train[keep].reset_index(drop=True)


def _map_sources(sources: pd.Series, dir_root: str | None, real: RealData) -> pd.Series:
    """Map augment ``source`` paths (relative to the augment DIR) onto real manifest paths.

    Tried in order: ``DIR/source`` relative to the real root (when ``DIR`` is known), ``source``
    itself as a real path, then a unique real path ending in ``/source``. Unmapped sources give "".
    """
    real_paths = real.manifest["path"].tolist()
    known = set(real_paths)
    by_suffix: dict[str, list[str]] = {}
    for p in real_paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            by_suffix.setdefault("/".join(parts[i:]), []).append(p)
    real_root = Path(real.root)
    dir_path = Path(dir_root).resolve() if dir_root else None

    def one(src: str) -> str:
        if dir_path is not None:
            absolute = dir_path / src
            if absolute.is_relative_to(real_root):
                rel = absolute.relative_to(real_root).as_posix()
                return rel if rel in known else ""
        if src in known:
            return src
        cands = by_suffix.get(src, [])
        return cands[0] if len(cands) == 1 else ""

    return sources.astype(str).map(one)


def load_synthetic(augmented_out: str | os.PathLike, real: RealData) -> pd.DataFrame:
    """Kept synthetic images of an augment OUT folder, mapped onto the real dataset.

    Reads ``OUT/manifest.parquet`` (written by :func:`posegen.augment.augment` or by
    :func:`make_flip_synthetic`) and keeps rows with ``synthetic & kept`` and a non-empty ``path``.
    The augment input folder is read from ``OUT/.posegen/run.json`` (``root``) to locate each
    ``source`` in the real dataset (see :func:`_map_sources`).

    Args:
        augmented_out: the augment OUT folder.
        real: the real dataset (:func:`load_real`).

    Returns:
        DataFrame with columns ``abs_path`` (str), ``path`` (relative to OUT), ``pid``, ``camid``
        (int64), ``split`` (str), ``source`` (str, as in the manifest), ``real_path`` (str: the
        source's path in the real manifest, ``""`` when it is not found there).

    Raises:
        FileNotFoundError: no ``manifest.parquet`` in OUT, or a kept synthetic image file is missing.
        ValueError: the manifest lacks a required column.
    """
    out = Path(augmented_out).expanduser().resolve()
    mpath = out / "manifest.parquet"
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath} not found: --augmented must be a posegen augment output folder")
    df = pd.read_parquet(mpath)
    missing = [c for c in ("path", "pid", "camid", "split", "synthetic", "source", "kept") if c not in df.columns]
    if missing:
        raise ValueError(f"{mpath} lacks the column(s) {', '.join(missing)}")
    df = df[df["synthetic"].astype(bool) & df["kept"].astype(bool) & (df["path"].astype(str) != "")]
    df = df.reset_index(drop=True)
    run_json = out / ".posegen" / "run.json"
    dir_root = json.loads(run_json.read_text()).get("root") if run_json.is_file() else None
    syn = pd.DataFrame(
        {
            "abs_path": [str(out / p) for p in df["path"].astype(str)],
            "path": df["path"].astype(str),
            "pid": df["pid"].astype(np.int64),
            "camid": df["camid"].astype(np.int64),
            "split": df["split"].astype(str),
            "source": df["source"].astype(str),
        }
    )
    syn["real_path"] = _map_sources(syn["source"], dir_root, real) if len(syn) else pd.Series(dtype=str)
    absent = [p for p in syn["abs_path"] if not os.path.isfile(p)]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} kept synthetic image(s) listed in {mpath} are missing, e.g. {absent[0]}"
        )
    return syn


def _synthetic_name(rel_path: str, k: int) -> str:
    """posegen's synthetic naming (as :func:`posegen.augment.synthetic_name`): ``a/b_pg<kk>.ext``."""
    p = Path(rel_path)
    return (p.parent / f"{p.stem}_pg{k:02d}{p.suffix}").as_posix()


def make_flip_synthetic(
    real: RealData,
    out: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write horizontally flipped copies of the real training images: a stand-in synthetic set.

    The folder has the format of an augment OUT (``manifest.parquet`` with ``synthetic = kept =
    True``, ``k = 0``, ``source`` = the real path; ``.posegen/run.json`` with ``root`` = the real
    root), so :func:`load_synthetic` reads it like a real augment output. File ``train/0001_03.jpg``
    becomes ``out/train/0001_03_pg00.jpg`` (same size, same format). Existing files are kept (a
    re-run only writes the missing ones); every file is written atomically.

    Note the real arm already flips at random (torchreid's ``random_flip``), so this stand-in adds
    no new pose: it exercises the pipeline, it does not measure a generator.

    Args:
        real: the real dataset; all its training images are flipped.
        out: output folder (created).
        progress: ``progress(done, total)`` per image.

    Returns:
        The folder ``out``.
    """
    out = Path(out).expanduser().resolve()
    rows = []
    total = len(real.train)
    for i, r in enumerate(real.train.itertuples(index=False), 1):
        rel = _synthetic_name(r.path, 0)
        dst = out / rel
        if not dst.is_file():
            with Image.open(Path(real.root) / r.path) as im:
                atomic_save_image(ImageOps.mirror(im.convert("RGB")), dst)
        rows.append(
            dict(path=rel, pid=int(r.pid), camid=int(r.camid), split="train", synthetic=True, source=r.path,
                 k=0, target_pose_source="hflip", seed=-1, oks=np.nan, kept=True, reason="")
        )  # fmt: skip
        if progress is not None:
            progress(i, total)
    atomic_write_json(out / ".posegen" / "run.json", {"root": real.root, "synthetic": "hflip"})
    atomic_to_parquet(pd.DataFrame(rows), out / "manifest.parquet")
    return out


def check_leaks(synthetic: pd.DataFrame, real: RealData, kept_real_paths=None) -> None:
    """Fail if a synthetic image could leak test information into training.

    A synthetic image is a leak (or unverifiable) when:

    - its source is not found in the real dataset (``real_path == ""``): it cannot be checked;
    - its own split is not ``train``;
    - its source is a query or gallery image;
    - its pid differs from its source's pid;
    - (shared pid space only) its pid is a query/gallery identity;
    - ``kept_real_paths`` is given and its source is not in it (the source was dropped by
      ``--real-fraction``: the synthetic image would bring the dropped image back).

    Args:
        synthetic: rows as returned by :func:`load_synthetic` (``path``, ``pid``, ``split``,
            ``source``, ``real_path``).
        real: the real dataset.
        kept_real_paths: the kept real training paths (iterable of str), or None to skip that check.

    Raises:
        LeakError: any synthetic image matches one of the cases; the message gives counts and
            examples per reason.
    """
    if synthetic.empty:
        return
    everything = real.manifest.set_index("path")
    rp = synthetic["real_path"].astype(str)
    found = rp != ""
    src_split = pd.Series("", index=synthetic.index)
    src_pid = pd.Series(-(10**9), index=synthetic.index, dtype=np.int64)
    src_split[found] = everything.loc[rp[found], "split"].to_numpy()
    src_pid[found] = everything.loc[rp[found], "pid"].to_numpy()
    problems: dict[str, pd.Series] = {
        "source not found in the real dataset": ~found,
        "synthetic image is labelled query/gallery": synthetic["split"].astype(str) != "train",
        "source is a query/gallery image": src_split.isin(_TEST_SPLITS),
        "pid differs from the source's pid": found & (synthetic["pid"].astype(np.int64) != src_pid),
    }
    if real.shared_pid_space:
        test_pids = set(real.manifest.loc[real.manifest["split"].isin(_TEST_SPLITS), "pid"])
        problems["pid is a query/gallery identity"] = synthetic["pid"].isin(test_pids)
    if kept_real_paths is not None:
        kept = set(kept_real_paths)
        problems["source was dropped from the real training set"] = found & ~rp.isin(kept)
    lines = []
    for reason, mask in problems.items():
        n = int(mask.sum())
        if n:
            ex = synthetic.loc[mask, ["path", "source"]].head(3)
            examples = "; ".join(f"{p} (source {s})" for p, s in zip(ex["path"], ex["source"]))
            lines.append(f"  {reason}: {n} image(s), e.g. {examples}")
    if lines:
        raise LeakError(
            f"synthetic set fails the leak check ({len(synthetic)} kept synthetic images):\n" + "\n".join(lines)
        )


def relabel(pids) -> dict[int, int]:
    """Map training pids to contiguous 0-based labels (increasing pid order), as torchreid expects."""
    return {int(p): i for i, p in enumerate(sorted({int(p) for p in pids}))}


def build_train_sets(
    real: RealData,
    synthetic: pd.DataFrame | None,
    fraction: float,
    seed: int,
    arms: tuple[str, ...] = ARMS,
) -> dict[str, TrainSet]:
    """The training sets of every arm for one ``(fraction, seed)``.

    - ``real``: :func:`subsample_real` of the real training images.
    - ``synthetic``: the kept real images plus the synthetic images whose source is kept.
    - ``duplicate``: the kept real images plus, for each of those synthetic images, one more copy of
      its source image: the same number of extra samples with the same identities, and no new pose.

    Every arm shares the label map of the kept real pids. The leak check (:func:`check_leaks`) is
    run on the synthetic images used.

    Args:
        real: the real dataset.
        synthetic: :func:`load_synthetic` rows (already leak-checked without a kept set), or None
            when only the ``real`` arm is asked for.
        fraction: real fraction in ``(0, 1]``.
        seed: seed of the draw.
        arms: arms to build, a subset of :data:`ARMS`.

    Returns:
        ``{arm: TrainSet}``.

    Raises:
        ValueError: an unknown arm, or ``synthetic``/``duplicate`` asked without a synthetic set.
        LeakError: see :func:`check_leaks`.
    """
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}; valid arms: {', '.join(ARMS)}")
    if synthetic is None and any(a != "real" for a in arms):
        raise ValueError("the synthetic and duplicate arms need a synthetic set (--augmented OUT or --synthetic flip)")
    kept = subsample_real(real.train, fraction, seed)
    labels = relabel(kept["pid"])
    root = Path(real.root)
    real_rows = pd.DataFrame(
        {
            "abs_path": [str(root / p) for p in kept["path"]],
            "label": kept["pid"].map(labels).astype(np.int64),
            "camid": kept["camid"].astype(np.int64),
            "pid": kept["pid"].astype(np.int64),
            "kind": "real",
            "real_path": kept["path"].astype(str),
        }
    )
    out: dict[str, TrainSet] = {}
    syn_rows = dup_rows = None
    if synthetic is not None:
        syn = synthetic[synthetic["real_path"].isin(set(kept["path"]))].reset_index(drop=True)
        check_leaks(syn, real, kept["path"])
        syn_rows = pd.DataFrame(
            {
                "abs_path": syn["abs_path"].astype(str),
                "label": syn["pid"].map(labels).astype(np.int64),
                "camid": syn["camid"].astype(np.int64),
                "pid": syn["pid"].astype(np.int64),
                "kind": "synthetic",
                "real_path": syn["real_path"].astype(str),
            }
        )
        src = real_rows.set_index("real_path").loc[syn["real_path"]].reset_index()
        dup_rows = src.assign(kind="duplicate")[real_rows.columns]
    for arm in arms:
        extra = {"real": None, "synthetic": syn_rows, "duplicate": dup_rows}[arm]
        rows = real_rows if extra is None else pd.concat([real_rows, extra], ignore_index=True)
        stats = {
            "n_real": int(len(real_rows)),
            "n_extra": 0 if extra is None else int(len(extra)),
            "n_images": int(len(rows)),
            "n_pids": len(labels),
        }
        out[arm] = TrainSet(arm=arm, fraction=float(fraction), seed=int(seed), rows=rows, num_classes=len(labels), stats=stats)
    return out
