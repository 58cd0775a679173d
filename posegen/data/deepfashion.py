"""The ``deepfashion`` layout: DeepFashion In-shop Clothes Retrieval, in both forms users have.

**Release tree** (the In-shop download): ``ROOT/img/<MEN|WOMEN>/<Category>/id_<8 digits>/<NN>_<k>_<view>.<ext>``,
e.g. ``img/MEN/Jackets_Vests/id_00004014/03_4_full.jpg``, with an optional partition file
``ROOT/list_eval_partition.txt`` (or ``ROOT/Eval/list_eval_partition.txt``, where the release keeps it).
The release's own root (``Img/img/...``, ``Eval/list_eval_partition.txt``) is read as well.

**Flat Pose-Transfer naming** (PATN, DPTN, PIDM, CFLD): ``fashion<MEN|WOMEN><Category>id<8 digits><NN>_<k><view>.<ext>``,
e.g. ``fashionMENJackets_Vestsid0000401403_4full.jpg`` (= the tree file above), either directly in
ROOT or in ``ROOT/train/`` and/or ``ROOT/test/``; an optional ``ROOT/list_eval_partition.txt`` is used
the same way (the flat name is mapped back to its ``img/...`` path).

Manifest values (see :mod:`posegen.data.layouts` for the columns):

- ``pid`` = the item number (``id_00004014`` -> 4014), ``identity`` = ``"id_00004014"``; one item is
  one garment, shown by one or several models in several views.
- ``camid`` = the view's index in :data:`VIEWS` (``front`` 0, ``side`` 1, ``back`` 2, ``full`` 3,
  ``additional`` 4, ``flat`` 5; ``flat`` is the garment alone, no person).
- ``split``: from the partition file when there is one (its ``evaluation_status``: ``train``,
  ``query`` or ``gallery``); for an image it does not list (or without one): ``train``, except in the
  flat form's ``test/`` folder, whose images are ``gallery`` (never re-posed by ``augment``; a
  retrieval protocol with a query split needs the partition file).
- Synthetic images (``..._pg<kk>.<ext>``, :func:`posegen.augment.synthetic_name`) parse like their
  source and take its split; partition lines naming files that are absent are ignored (an
  ``augment --limit`` output keeps the full partition file).

At least 90 % of the image files found (under ``img/``, or in the root / ``train/`` / ``test/``) must
follow the naming; the others are skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from posegen.data.layouts import _image_names  # one listing rule (hidden files, symlinks) for every layout

__all__ = [
    "VIEWS", "PARTITION_FILE", "TREE_PATTERN", "FLAT_PATTERN", "NoMatch", "PartitionError", "parse_deepfashion",
    "partition_file", "read_partition", "flat_to_tree", "layout_files",
]  # fmt: skip

#: The In-shop view vocabulary; camid = index in this tuple.
VIEWS = ("front", "side", "back", "full", "additional", "flat")
#: The In-shop partition file's name.
PARTITION_FILE = "list_eval_partition.txt"
#: Human-readable patterns, used in error messages.
TREE_PATTERN = "img/<MEN|WOMEN>/<Category>/id_<8 digits>/<NN>_<k>_<view>.jpg"
FLAT_PATTERN = "fashion<MEN|WOMEN><Category>id<8 digits><NN>_<k><view>.jpg"

_VIEW_RE = "|".join(VIEWS)
_TREE_STEM = re.compile(rf"^(\d{{2}})_(\d+)_({_VIEW_RE})(?:_pg\d+)?$")
_FLAT_STEM = re.compile(rf"^fashion(MEN|WOMEN)(.+?)id(\d{{8}})(\d{{2}})_(\d+)({_VIEW_RE})(?:_pg\d+)?$")
_ITEM_DIR = re.compile(r"^id_(\d{8})$")
_GENDERS = ("MEN", "WOMEN")
_STATUSES = ("train", "query", "gallery")
_MIN_MATCHING = 0.9


class NoMatch(Exception):
    """The folder does not follow the layout; ``str(e)`` says why (caught by the layout detector)."""


class PartitionError(ValueError):
    """The partition file is malformed (the message names the file and line)."""


def _is_image(name: str) -> bool:
    from posegen.data.images import is_image_file

    return not name.startswith(".") and is_image_file(name)


def flat_to_tree(name: str) -> str | None:
    """The release-tree path of a flat Pose-Transfer name, without extension and ``_pg`` suffix.

    >>> flat_to_tree("fashionMENJackets_Vestsid0000401403_4full.jpg")
    'img/MEN/Jackets_Vests/id_00004014/03_4_full'

    Returns None when ``name`` does not follow the flat naming.
    """
    m = _FLAT_STEM.match(Path(name).stem)
    if m is None:
        return None
    gender, category, item, nn, k, view = m.groups()
    return f"img/{gender}/{category}/id_{item}/{nn}_{k}_{view}"


def _tree_key(rel: str) -> str:
    """``img/.../03_4_full_pg01.jpg`` -> ``img/.../03_4_full`` (the partition lookup key)."""
    p = Path(rel)
    stem = re.sub(r"_pg\d+$", "", p.stem)
    return (p.parent / stem).as_posix()


def partition_file(root: str | os.PathLike) -> Path | None:
    """The partition file of a deepfashion root: ``ROOT/list_eval_partition.txt`` or
    ``ROOT/Eval/list_eval_partition.txt`` (the first that exists), or None."""
    root = Path(root)
    for p in (root / PARTITION_FILE, root / "Eval" / PARTITION_FILE):
        if p.is_file():
            return p
    return None


def read_partition(path: str | os.PathLike) -> dict[str, str]:
    """Read an In-shop ``list_eval_partition.txt``: ``{tree path without extension: status}``.

    The file is the release's: an optional first line with the number of images, an optional
    header ``image_name item_id evaluation_status``, then one ``img/... id_<8 digits> <status>`` line
    per image, status ``train``, ``query`` or ``gallery``.

    Raises:
        PartitionError: a line that is not ``path item status`` or has an unknown status
            (the message names the file and line).
    """
    out: dict[str, str] = {}
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or (lineno <= 2 and (fields[0].isdigit() or fields[0] == "image_name")):
            continue
        if len(fields) != 3 or fields[2] not in _STATUSES:
            raise PartitionError(
                f"{path}:{lineno}: expected 'img/<...>.jpg id_<8 digits> train|query|gallery', got {line[:80]!r}"
            )
        out[_tree_key(fields[0])] = fields[2]
    return out


# A row: (path, pid, camid, split, identity), as posegen.data.layouts expects.
Row = tuple[str, int, int, str, str]


def _parse_tree(root: Path, prefix: str) -> list[Row]:
    img = root / prefix
    total = 0
    rows: list[tuple[str, int, int, str]] = []  # path, pid, camid, key
    for dirpath, dirs, files in os.walk(img):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        parts = Path(dirpath).relative_to(img).parts  # (gender, category, item) at the right depth
        for name in sorted(f for f in files if _is_image(f)):
            total += 1
            if len(parts) != 3 or parts[0] not in _GENDERS:
                continue
            item, m = _ITEM_DIR.match(parts[2]), _TREE_STEM.match(Path(name).stem)
            if item is None or m is None:
                continue
            rel = (Path(prefix) / Path(*parts) / name).as_posix()
            key = _tree_key(Path("img", *parts, name).as_posix())  # the partition file's img/... path
            rows.append((rel, int(item.group(1)), VIEWS.index(m.group(3)), key))
    if total == 0:
        raise NoMatch(f"img/ holds no images (expected {TREE_PATTERN})")
    if len(rows) < _MIN_MATCHING * total:
        raise NoMatch(
            f"only {len(rows)} of the {total} image files under img/ follow {TREE_PATTERN} "
            f"(view one of {', '.join(VIEWS)}); need at least {_MIN_MATCHING:.0%}"
        )
    part = partition_file(root)
    status = read_partition(part) if part is not None else {}
    return [(rel, pid, cam, status.get(key, "train"), f"id_{pid:08d}") for rel, pid, cam, key in rows]


def _parse_flat(root: Path) -> list[Row]:
    files = [(f"{sub}/{n}", n, sub) for sub in ("train", "test") for n in _image_names(root / sub)]
    where = "train/ and test/"
    if not files:
        files = [(n, n, "") for n in _image_names(root)]
        where = "the root"
    if not files:
        raise NoMatch(f"no img/ folder ({TREE_PATTERN}) and no images in the root, train/ or test/ ({FLAT_PATTERN})")
    part = partition_file(root)
    status = read_partition(part) if part is not None else {}
    rows: list[Row] = []
    for rel, name, sub in files:
        m = _FLAT_STEM.match(Path(name).stem)
        if m is None:
            continue
        pid, camid = int(m.group(3)), VIEWS.index(m.group(6))
        default = "gallery" if sub == "test" else "train"
        split = status.get(flat_to_tree(name), default)
        rows.append((rel, pid, camid, split, f"id_{m.group(3)}"))
    if len(rows) < _MIN_MATCHING * len(files):
        raise NoMatch(
            f"only {len(rows)} of the {len(files)} image files in {where} are named {FLAT_PATTERN} "
            f"(view one of {', '.join(VIEWS)}); need at least {_MIN_MATCHING:.0%}, or an {TREE_PATTERN} tree"
        )
    return rows


def parse_deepfashion(root: str | os.PathLike) -> list[Row]:
    """Rows ``(path, pid, camid, split, identity)`` of a deepfashion root (conventions: module docstring).

    ``path`` is POSIX, relative to ``root``. The release tree is read when ``root/img/`` exists (or
    ``root/Img/img/``: the release's own root, with ``Eval/list_eval_partition.txt``), else the flat form.

    Raises:
        NoMatch: ``root`` follows neither form (the message says what was expected and what was found).
        PartitionError: the partition file is malformed.
    """
    root = Path(root)
    if (root / "img").is_dir():
        return _parse_tree(root, "img")
    if (root / "Img" / "img").is_dir():
        return _parse_tree(root, "Img/img")
    return _parse_flat(root)


def layout_files(root: str | os.PathLike) -> list[str]:
    """Non-image files of a deepfashion root that belong to the dataset (the partition file), as
    POSIX paths relative to ``root``; ``augment`` copies them so that OUT keeps the layout."""
    part = partition_file(root)
    return [] if part is None else [part.relative_to(Path(root)).as_posix()]
