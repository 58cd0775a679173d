"""Dataset layouts: a folder of person images -> a **manifest** DataFrame.

The manifest has one row per image file, sorted by ``path``, with a fresh ``RangeIndex``:

============  =======  ==========================================================================
column        dtype    meaning
============  =======  ==========================================================================
``path``      str      POSIX path of the image **relative to the dataset root** (``df.attrs["root"]``)
``pid``       int64    person identity (see each layout for its numbering)
``camid``     int64    camera, 0-based
``split``     str      ``"train"``, ``"query"`` or ``"gallery"``
``synthetic`` bool     the file name follows posegen's synthetic naming (see :func:`is_synthetic_name`)
``identity``  str      the original identity label: the folder name (generic), ``id_<8 digits>``
                       (deepfashion), else ``f"{pid:04d}"``
============  =======  ==========================================================================

``df.attrs["root"]`` is the absolute dataset root (str) and ``df.attrs["layout"]`` the layout name.

Layouts (:data:`LAYOUTS`, tried in this order by :func:`detect_layout`):

- ``market1501``: ``bounding_box_train/`` (split train), ``query/`` (query) and ``bounding_box_test/``
  (gallery); at least one must hold images named like ``0002_c1s1_000451_03.jpg``
  (``^(-?\\d+)_c([1-9])s(\\d)_``). As torchreid's ``Market1501``: pid -1 (junk) is skipped, pid 0
  (distractors, ``0000_...``) is kept; camid = ``c - 1``. Other files in those folders are skipped.
- ``cuhk03`` (paired cameras): files ``<pid>_<k>.<ext>`` with ``k`` two digits 00-09; k 00-04 is
  view A (camid 0), 05-09 view B (camid 1). Either the root holds ``train/`` and/or ``val/``:
  ``train/*`` is split train, ``val/*`` view A is split query and view B split gallery; or the root
  itself is a flat folder of such files, all split train. **pids restart from 0 in** ``val/``: they
  are unique within train and within query + gallery, not across the two (as in the CUHK03 release
  this follows), so ``(split == "train", pid)`` is the identity key. At least 90 % of the image files
  must follow the naming; the others are skipped.
- ``deepfashion``: DeepFashion In-shop, the release tree
  ``img/<MEN|WOMEN>/<Category>/id_<8 digits>/<NN>_<k>_<view>.jpg`` (optional ``list_eval_partition.txt``)
  or the flat Pose-Transfer naming ``fashion<MEN|WOMEN><Category>id<8 digits><NN>_<k><view>.jpg`` (root,
  or ``train/`` and ``test/``); pid = item number, identity ``id_<8 digits>``, camid = view index
  (front 0, side 1, back 2, full 3, additional 4, flat 5). Details: :mod:`posegen.data.deepfashion`.
- ``generic``: one sub-folder per identity (its name is the identity label), images directly inside
  it; pid = index of the folder in sorted order of the names of folders holding images; camid 0;
  split train. Files directly in the root are ignored.

Everywhere, files and folders whose name starts with ``"."`` are ignored (posegen keeps its state in
``OUT/.posegen/``), and only names are parsed: a file is an image when its extension is one of
:data:`~posegen.data.images.IMAGE_EXTENSIONS`, whatever its content (a broken file is reported later,
by the stage that reads it).
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from posegen.data.images import IMAGE_EXTENSIONS, is_image_file

__all__ = [
    "LAYOUTS",
    "MANIFEST_COLUMNS",
    "LayoutError",
    "detect_layout",
    "is_synthetic_name",
    "layout_files",
    "load_dataset",
    "skipped_images",
]

#: Manifest columns, in order.
MANIFEST_COLUMNS = ("path", "pid", "camid", "split", "synthetic", "identity")

_SYNTHETIC_STEM = re.compile(r"_pg\d+$")
_MARKET_NAME = re.compile(r"^(-?\d+)_c([1-9])s(\d)_")
_CUHK03_STEM = re.compile(r"^(\d+)_(\d{2})(?:_pg\d+)?$")
_MARKET_SPLITS = (("bounding_box_train", "train"), ("query", "query"), ("bounding_box_test", "gallery"))
_CUHK03_MIN_MATCHING = 0.9


class LayoutError(ValueError):
    """A folder is not a dataset of the requested (or of any known) layout.

    The message names the folder and, for each layout tried, why it did not match.
    """


def is_synthetic_name(path: str | os.PathLike) -> bool:
    """True if the file name follows posegen's synthetic naming: its stem ends in ``_pg<digits>``.

    E.g. ``0002_c1s1_000451_03_pg01.jpg``, ``0000_00_pg03.jpg``, ``alice/img1_pg02.png``.
    """
    return _SYNTHETIC_STEM.search(Path(path).stem) is not None


class _NoMatch(Exception):
    """Raised by a parser when the folder does not follow its layout; ``str(e)`` says why."""


# A parser returns the manifest's rows as (path, pid, camid, split, identity) tuples.
_Row = tuple[str, int, int, str, str]


def _image_names(folder: Path) -> list[str]:
    """Names of the non-hidden image files directly in ``folder`` (sorted; [] if not a folder).

    Symlinks with an image name are listed even when dangling or looping, so the stage that reads
    them records why they are unusable instead of dropping them silently.
    """
    if not folder.is_dir():
        return []
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and _file_or_link(e) and is_image_file(e.name))


def _file_or_link(entry: os.DirEntry) -> bool:
    """A regular file, or a symlink (possibly dangling or looping: ``is_file`` raises for a loop)."""
    try:
        return entry.is_file() or entry.is_symlink()
    except OSError:
        return True


def _subfolders(folder: Path) -> list[str]:
    """Names of the non-hidden sub-folders of ``folder`` (sorted)."""
    def is_dir(e: os.DirEntry) -> bool:
        try:
            return e.is_dir()
        except OSError:  # a symlink loop
            return False

    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and is_dir(e))


def _parse_market1501(root: Path) -> list[_Row]:
    present = [(d, s) for d, s in _MARKET_SPLITS if (root / d).is_dir()]
    if not present:
        raise _NoMatch("no bounding_box_train/, bounding_box_test/ or query/ folder")
    rows: list[_Row] = []
    for folder, split in present:
        for name in _image_names(root / folder):
            m = _MARKET_NAME.match(name)
            if m is None:
                continue
            pid = int(m.group(1))
            if pid == -1:
                continue
            rows.append((f"{folder}/{name}", pid, int(m.group(2)) - 1, split, f"{pid:04d}"))
    if not rows:
        folders = ", ".join(f"{d}/" for d, _ in present)
        raise _NoMatch(f"{folders} hold no images named like 0002_c1s1_000451_03.jpg")
    return rows


def _cuhk03_name(name: str) -> tuple[int, int] | None:
    """``(pid, camid)`` of a CUHK03 file name ``<pid>_<k>.<ext>``, or None if it does not match."""
    m = _CUHK03_STEM.match(Path(name).stem)
    if m is None or int(m.group(2)) > 9:
        return None
    return int(m.group(1)), 0 if int(m.group(2)) < 5 else 1


def _parse_cuhk03(root: Path) -> list[_Row]:
    files = [(f"{sub}/{n}", n, sub) for sub in ("train", "val") for n in _image_names(root / sub)]
    where = "train/ and val/"
    if not files:
        files = [(n, n, "") for n in _image_names(root)]
        where = "the root"
    if not files:
        raise _NoMatch("no files named <pid>_<k>.jpg (k 00-09) in the root, train/ or val/")
    rows: list[_Row] = []
    for path, name, sub in files:
        parsed = _cuhk03_name(name)
        if parsed is None:
            continue
        pid, camid = parsed
        split = "train" if sub != "val" else ("query" if camid == 0 else "gallery")
        rows.append((path, pid, camid, split, f"{pid:04d}"))
    if len(rows) < _CUHK03_MIN_MATCHING * len(files):
        raise _NoMatch(
            f"only {len(rows)} of the {len(files)} image files in {where} are named <pid>_<k>.<ext> "
            f"(k 00-09); need at least {_CUHK03_MIN_MATCHING:.0%}"
        )
    return rows


def _parse_deepfashion(root: Path) -> list[_Row]:
    from posegen.data import deepfashion

    try:
        return deepfashion.parse_deepfashion(root)
    except deepfashion.NoMatch as e:
        raise _NoMatch(str(e)) from None
    except deepfashion.PartitionError as e:
        raise LayoutError(str(e)) from None


def layout_files(root: str | os.PathLike, layout: str) -> list[str]:
    """Non-image files of a ``layout`` dataset at ``root`` that belong to it (POSIX, relative to
    ``root``): ``augment`` copies them to OUT so that OUT keeps the layout. Only ``deepfashion``
    has one (its ``list_eval_partition.txt``); [] for the others."""
    if layout != "deepfashion":
        return []
    from posegen.data import deepfashion

    return deepfashion.layout_files(root)


def _parse_generic(root: Path) -> list[_Row]:
    identities = [(d, names) for d in _subfolders(root) if (names := _image_names(root / d))]
    if not identities:
        raise _NoMatch("no sub-folder containing images")
    return [(f"{d}/{n}", pid, 0, "train", d) for pid, (d, names) in enumerate(identities) for n in names]


_PARSERS: dict[str, Callable[[Path], list[_Row]]] = {
    "market1501": _parse_market1501,
    "cuhk03": _parse_cuhk03,
    "deepfashion": _parse_deepfashion,
    "generic": _parse_generic,
}

#: Known layout names, in the order :func:`detect_layout` tries them.
LAYOUTS: tuple[str, ...] = tuple(_PARSERS)


def _has_any_image(root: Path) -> bool:
    """True if any non-hidden folder under ``root`` (recursively) holds a non-hidden image file."""
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not f.startswith(".") and is_image_file(f) for f in files):
            return True
    return False


def _parse(root: str | os.PathLike, layouts: tuple[str, ...]) -> tuple[Path, str, list[_Row]]:
    """Try ``layouts`` in order on ``root``; return ``(absolute root, layout, rows)`` of the first match."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise LayoutError(f"dataset root {path} is not a folder" + ("" if path.exists() else " (it does not exist)"))
    reasons = []
    for name in layouts:
        try:
            return path, name, _PARSERS[name](path)
        except _NoMatch as e:
            reasons.append((name, str(e)))
    if not _has_any_image(path):
        raise LayoutError(f"{path} holds no images (no file ending in {', '.join(IMAGE_EXTENSIONS)})")
    if len(layouts) == 1:
        raise LayoutError(f"{path} is not a {layouts[0]} dataset: {reasons[0][1]}")
    tried = "\n".join(f"  {name}: {reason}" for name, reason in reasons)
    raise LayoutError(f"could not detect the layout of {path}; tried:\n{tried}")


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the first layout of :data:`LAYOUTS` that ``root`` follows.

    Raises:
        LayoutError: ``root`` is not a folder, holds no images, or follows no layout (the message
            says, for each layout, why it did not match).
    """
    return _parse(root, LAYOUTS)[1]


def load_dataset(root: str | os.PathLike, layout: str | None = None) -> pd.DataFrame:
    """Read a dataset folder into a manifest DataFrame (columns and conventions: module docstring).

    Args:
        root: the dataset root folder.
        layout: one of :data:`LAYOUTS`, or None to detect it (:func:`detect_layout`).

    Returns:
        The manifest: columns :data:`MANIFEST_COLUMNS` (``path`` str relative to the root, POSIX;
        ``pid``, ``camid`` int64; ``split`` str; ``synthetic`` bool; ``identity`` str), one row per
        image, sorted by ``path``; ``attrs["root"]`` (absolute root, str) and ``attrs["layout"]``.
        Files the layout skips by name: :func:`skipped_images`.

    Raises:
        ValueError: ``layout`` is not a known layout name.
        LayoutError: ``root`` is not a folder, holds no images, or does not follow ``layout``
            (or any layout, when detecting).
    """
    if layout is not None and layout not in _PARSERS:
        raise ValueError(f"unknown dataset layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    path, name, rows = _parse(root, LAYOUTS if layout is None else (layout,))
    paths, pids, camids, splits, identities = zip(*sorted(rows))
    df = pd.DataFrame(
        {
            "path": pd.Series(paths, dtype=str),
            "pid": np.asarray(pids, dtype=np.int64),
            "camid": np.asarray(camids, dtype=np.int64),
            "split": pd.Series(splits, dtype=str),
            "synthetic": np.fromiter((is_synthetic_name(p) for p in paths), dtype=bool, count=len(paths)),
            "identity": pd.Series(identities, dtype=str),
        }
    )
    df.attrs["root"] = str(path)
    df.attrs["layout"] = name
    return df


def skipped_images(manifest: pd.DataFrame) -> list[str]:
    """Image files beside a manifest's images (same folders) whose names its layout does not accept.

    E.g. ``holiday.jpg`` in a CUHK03 folder: the layout skips it by name; callers report such files
    instead of dropping them silently. Market-1501 junk images (pid -1, named correctly) are
    skipped by design (as torchreid does) and not listed.

    Args:
        manifest: a :func:`load_dataset` result (uses ``path`` and ``attrs["root"]``, ``attrs["layout"]``).

    Returns:
        Relative POSIX paths, sorted.
    """
    root, layout = Path(manifest.attrs["root"]), manifest.attrs["layout"]
    taken = set(manifest["path"])
    folders = sorted({posixpath.dirname(p) for p in taken})
    skipped = []
    for folder in folders:
        for n in _image_names(root / folder):
            rel = f"{folder}/{n}" if folder else n
            if layout == "market1501" and _MARKET_NAME.match(n):
                continue  # junk (pid -1): skipped on purpose
            if rel not in taken:
                skipped.append(rel)
    return sorted(skipped)
