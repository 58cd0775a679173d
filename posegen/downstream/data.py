"""Training and test sets for the downstream re-ID evaluation, built from posegen manifests.

Everything here is plain pandas over manifests (see :mod:`posegen.data.layouts`); no image is
decoded except by :func:`flip_paths`, and torchreid is not imported.

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
- **Synthetic set** (the ``posegen`` arm): an augment OUT folder (``OUT/manifest.parquet``; only rows with
  ``synthetic & kept`` and a non-empty ``path``, relative to OUT). Each synthetic row's ``source`` (relative to the augment
  input DIR, recorded in ``OUT/.posegen/run.json`` as ``root``) is mapped onto the real dataset's
  ``path`` column as ``real_path``.
- **Training labels**: torchreid's softmax classifier wants contiguous 0-based labels; the kept real
  training pids are relabelled ``0..C-1`` in increasing pid order (:func:`relabel`). Synthetic,
  duplicated and flipped images take their source's label; camids are kept as they are. Test pids and camids are
  never relabelled (evaluation only compares them for equality).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from .._io import atomic_save_image, atomic_to_parquet, atomic_write_json
from ..data import load_dataset
from ..data.subsets import subsample_real

__all__ = [
    "ARMS",
    "LeakError",
    "GeneratorCheck",
    "check_generator_leak",
    "flip_paths",
    "extra_sources_needed",
    "TrainSet",
    "RealData",
    "load_real",
    "subsample_real",
    "load_synthetic",
    "check_leaks",
    "relabel",
    "build_train_sets",
]

#: The arms of the comparison, in report order: the real images alone; plus posegen's kept synthetic
#: images; plus as many copies of real images (more steps, no new pose); plus as many horizontally
#: flipped real images (the cheapest augmentation a user would try first).
ARMS: tuple[str, ...] = ("real", "posegen", "duplicate", "flip")

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
            ``kind`` (``"real"``, ``"posegen"``, ``"duplicate"`` or ``"flip"``), ``real_path`` (the real image
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
            absolute = Path(os.path.normpath(dir_path / src))
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

    Reads ``OUT/manifest.parquet`` (written by :func:`posegen.augment.augment`) and keeps rows with ``synthetic & kept`` and a non-empty ``path``.
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


def flip_paths(
    real: RealData,
    paths,
    out: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """Write horizontally flipped copies of real training images (the ``flip`` arm's extra images).

    Real image ``train/0001_03.jpg`` becomes ``out/train/0001_03_pg00.jpg`` (same size and format;
    posegen's synthetic naming, so the folder is never mistaken for real data). Existing files are
    kept (a re-run writes only the missing ones); each file is written atomically. Inputs are only read.

    Note the training transform already flips at random (torchreid's ``random_flip``), so this arm
    adds no new pose: it is the baseline a generator has to beat.

    Args:
        real: the real dataset.
        paths: real paths (relative to ``real.root``) to flip; duplicates are written once.
        out: output folder (created).
        progress: ``progress(done, total)`` per image.

    Returns:
        ``{real_path: absolute path of its flipped copy}``.
    """
    out = Path(out).expanduser().resolve()
    todo = sorted(set(map(str, paths)))
    result = {}
    for i, rel in enumerate(todo, 1):
        dst = out / _synthetic_name(rel, 0)
        if not dst.is_file():
            with Image.open(Path(real.root) / rel) as im:
                atomic_save_image(ImageOps.mirror(ImageOps.exif_transpose(im).convert("RGB")), dst)
        result[rel] = str(dst)
        if progress is not None:
            progress(i, len(todo))
    return result


@dataclass
class GeneratorCheck:
    """What the generator of an augment output was trained on, against the evaluation set.

    Attributes:
        verified: the model card and training image digests were found and compared.
        leaked: a query/gallery image or identity is among the generator's training data (or it
            could not be verified).
        image_overlap: query/gallery images whose file digest is among the training digests.
        identity_overlap: query/gallery identities among the card's training identities of the
            same dataset.
        training_data: the card's ``training_data`` entries (identity lists shortened to counts).
        notes: human-readable lines for the report.
    """

    verified: bool
    leaked: bool
    image_overlap: int
    identity_overlap: int
    training_data: list
    notes: list

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _resolve_training_folder(folder: str, model_dir: Path | None) -> Path | None:
    p = Path(folder).expanduser()
    if p.is_absolute():
        return p.resolve() if p.is_dir() else None
    bases = [Path.cwd()]
    if model_dir is not None:
        bases = [model_dir, *list(model_dir.parents)[:4], *bases]
    for base in bases:
        if (base / p).is_dir():
            return (base / p).resolve()
    return None


def check_generator_leak(augmented_out: str | os.PathLike, real: RealData) -> GeneratorCheck:
    """Compare the generator's training data (from the augment output) with the evaluation set.

    Reads ``OUT/.posegen/model_card.json`` and ``OUT/.posegen/training_images.sha256`` (copied there
    by ``posegen augment`` from the model folder, see :mod:`posegen.repose.provenance`) and
    ``OUT/.posegen/run.json`` (``model``, the model folder, to resolve relative training folders).

    - **Images**: every query/gallery file of ``real`` is hashed
      (:func:`posegen.repose.provenance.file_digest`); one among the training digests is a leak.
    - **Identities**: for each card entry whose ``folder`` resolves to a folder inside ``real.root``
      (the same dataset): with a shared pid space (Market-1501, generic) a query/gallery pid among
      its ``identities`` is a leak; otherwise (CUHK03's ``val/`` renumbers pids) a query/gallery
      image inside that folder is. Entries of other datasets hold other people.
    - Without a model card or digests the check cannot be made: ``verified=False, leaked=True``.

    Args:
        augmented_out: the augment OUT folder.
        real: the evaluation dataset.

    Returns:
        A :class:`GeneratorCheck`. The caller decides (``eval-downstream`` refuses a leak unless
        ``--allow-leak``).

    Raises:
        ValueError: a malformed model card or digest file (see
            :func:`posegen.repose.provenance.read_provenance`).
    """
    from ..repose.provenance import file_digest, read_provenance

    state = Path(augmented_out).expanduser().resolve() / ".posegen"
    card, digests = read_provenance(state)
    run_json = state / "run.json"
    model = json.loads(run_json.read_text()).get("model") if run_json.is_file() else None
    if model is None:
        from ..repose.pipeline import default_model_dir

        model_dir = default_model_dir()
    else:
        model_dir = Path(model)
    notes: list[str] = []
    if card is None or digests is None:
        missing = " and ".join(n for n, v in (("model_card.json", card), ("training_images.sha256", digests)) if v is None)
        notes.append(
            f"the generator's training data cannot be verified: {state} has no {missing} "
            "(its model folder had none when augment ran)"
        )
        entries = list(card.get("training_data", [])) if card else []
        return GeneratorCheck(False, True, 0, 0, _short(entries), notes)
    root = Path(real.root).resolve()
    test = real.manifest[real.manifest["split"].isin(_TEST_SPLITS)]
    test_digests = [file_digest(root / p) for p in test["path"]]
    image_overlap = sum(d in digests for d in test_digests)
    identity_overlap = 0
    entries = list(card.get("training_data", []))
    for e in entries:
        folder = _resolve_training_folder(str(e.get("folder", "")), model_dir) if e.get("folder") else None
        name = f"{e.get('dataset', '?')} {e.get('split', '')}".strip()
        if folder is None:
            notes.append(f"training folder of {name} ({e.get('folder')}) is not on this machine: checked by image digests only")
            continue
        if not (folder == root or folder.is_relative_to(root) or root.is_relative_to(folder)):
            notes.append(f"{name} ({folder}) is another dataset than the evaluation's ({root})")
            continue
        if real.shared_pid_space:
            ids = {int(i) for i in e.get("identities", [])}
            overlap = set(test["pid"].astype(int)) & ids if ids else set(test["pid"].astype(int))
        else:
            inside = [p for p in test["path"] if (root / p).resolve().is_relative_to(folder)]
            overlap = set(test.loc[test["path"].isin(inside), "pid"].astype(int))
        identity_overlap += len(overlap)
        notes.append(f"{name} ({folder}) is part of the evaluation dataset: {len(overlap)} query/gallery identities in it")
    notes.insert(
        0,
        f"generator trained on {len(digests)} image files ({', '.join(str(e.get('dataset', '?')) + ' ' + str(e.get('split', '')) for e in entries) or 'no card entries'}); "
        f"{image_overlap} of the {len(test_digests)} query/gallery images are among them",
    )
    leaked = image_overlap > 0 or identity_overlap > 0
    return GeneratorCheck(True, leaked, image_overlap, identity_overlap, _short(entries), notes)


def _short(entries: list) -> list:
    return [{k: (len(v) if k == "identities" and isinstance(v, list) else v) for k, v in e.items()} for e in entries]


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
    flipped: dict[str, str] | None = None,
) -> dict[str, TrainSet]:
    """The training sets of every arm for one ``(fraction, seed)``.

    - ``real``: :func:`subsample_real` of the real training images.
    - ``posegen``: the kept real images plus the synthetic images whose source is kept.
    - ``duplicate``: the kept real images plus one more copy of a real image per extra image.
    - ``flip``: the kept real images plus one horizontally flipped real image per extra image.

    The extra images of ``duplicate`` and ``flip`` come from the same sources as ``posegen``'s (one
    per synthetic image whose source is kept), so the three arms have the same number of images of
    the same identities; without a synthetic set, every kept real image gets one extra image.
    Every arm shares the label map of the kept real pids. The leak check (:func:`check_leaks`) is
    run on the synthetic images used.

    Args:
        real: the real dataset.
        synthetic: :func:`load_synthetic` rows, or None (then ``posegen`` cannot be asked for).
        fraction: real fraction in ``(0, 1]``.
        seed: seed of the draw.
        arms: arms to build, a subset of :data:`ARMS`.
        flipped: ``{real_path: flipped image path}`` (:func:`flip_paths`), covering the sources of
            ``flip``'s extra images; needed when ``flip`` is asked for.

    Returns:
        ``{arm: TrainSet}``.

    Raises:
        ValueError: an unknown arm, ``posegen`` without a synthetic set, or ``flip`` without the
            flipped images of its sources.
        LeakError: see :func:`check_leaks`.
    """
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}; valid arms: {', '.join(ARMS)}")
    if synthetic is None and "posegen" in arms:
        raise ValueError("the posegen arm needs an augment output (--augmented OUT)")
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
    extras: dict[str, pd.DataFrame | None] = {"real": None}
    if synthetic is not None:
        syn = synthetic[synthetic["real_path"].isin(set(kept["path"]))].reset_index(drop=True)
        check_leaks(syn, real, kept["path"])
        extras["posegen"] = pd.DataFrame(
            {
                "abs_path": syn["abs_path"].astype(str),
                "label": syn["pid"].map(labels).astype(np.int64),
                "camid": syn["camid"].astype(np.int64),
                "pid": syn["pid"].astype(np.int64),
                "kind": "posegen",
                "real_path": syn["real_path"].astype(str),
            }
        )
        extra_sources = syn["real_path"].astype(str)
    else:
        extra_sources = real_rows["real_path"]
    src = real_rows.set_index("real_path").loc[extra_sources].reset_index()[real_rows.columns]
    extras["duplicate"] = src.assign(kind="duplicate")
    if "flip" in arms:
        missing = sorted(set(extra_sources) - set(flipped or {}))
        if missing:
            raise ValueError(f"the flip arm needs flipped copies of {len(missing)} image(s), e.g. {missing[0]} (see flip_paths)")
        extras["flip"] = src.assign(kind="flip", abs_path=src["real_path"].map(flipped))
    out: dict[str, TrainSet] = {}
    for arm in arms:
        extra = extras[arm]
        rows = real_rows if extra is None else pd.concat([real_rows, extra], ignore_index=True)
        stats = {
            "n_real": int(len(real_rows)),
            "n_extra": 0 if extra is None else int(len(extra)),
            "n_images": int(len(rows)),
            "n_pids": len(labels),
        }
        out[arm] = TrainSet(arm=arm, fraction=float(fraction), seed=int(seed), rows=rows, num_classes=len(labels), stats=stats)
    return out


def extra_sources_needed(real: RealData, synthetic: pd.DataFrame | None, fraction: float, seed: int) -> set[str]:
    """Real paths whose flipped copy the ``flip`` arm of ``(fraction, seed)`` uses (see :func:`build_train_sets`)."""
    kept = set(subsample_real(real.train, fraction, seed)["path"])
    if synthetic is None:
        return kept
    return set(synthetic.loc[synthetic["real_path"].isin(kept), "real_path"].astype(str))
