"""What a re-posing model was trained on: its model card and the digests of its training images.

A model folder (``model_index.json`` + components) may hold:

- ``model_card.json``: ``training_data``, a list of ``{"dataset", "split", "folder", "identities",
  "images", ...}`` entries (``folder`` as given at training time, absolute or relative to the
  repository; ``identities`` the pids of that folder's layout), plus free-form fields;
- ``training_images.sha256``: one line per image file the model may have seen during training, the
  first 16 hex digits of the SHA-256 of the file's bytes (:func:`file_digest`), sorted.

``posegen augment`` copies both into ``OUT/.posegen/`` so an augment output says which images its
generator saw, and ``posegen eval-downstream`` refuses an evaluation whose query/gallery images or
identities are among them (:func:`posegen.downstream.data.check_generator_leak`). Content digests
identify an image wherever the dataset lives on disk; identities are compared by folder and pid.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from .._io import atomic_write_json, atomic_write_text

__all__ = [
    "MODEL_CARD",
    "TRAINING_DIGESTS",
    "DIGEST_HEX",
    "file_digest",
    "model_folder",
    "read_provenance",
    "write_provenance",
]

MODEL_CARD = "model_card.json"
TRAINING_DIGESTS = "training_images.sha256"
#: Hex digits kept of each SHA-256 (64 bits: a chance collision among 10^4 x 10^4 images is ~1e-11).
DIGEST_HEX = 16


def file_digest(path: str | os.PathLike, n_hex: int = DIGEST_HEX) -> str:
    """First ``n_hex`` (default :data:`DIGEST_HEX`) hex digits of the SHA-256 of a file's bytes,
    read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n_hex]


def model_folder(model: str | os.PathLike) -> Path:
    """The pipeline folder of ``model``: itself, or ``model/model`` for a ``posegen train`` run."""
    p = Path(model)
    return p / "model" if (p / "model" / "model_index.json").is_file() else p


def read_provenance(folder: str | os.PathLike) -> tuple[dict | None, set[str] | None]:
    """``(model card dict or None, training image digests or None)`` of a model or state folder.

    Looks in ``folder`` and, for a training run, ``folder/model``.

    Raises:
        ValueError: a model card that is not a JSON object, or a digest line that is not
            :data:`DIGEST_HEX` hex digits (the message names the file).
    """
    folder = Path(folder)
    card = digests = None
    for base in (folder, folder / "model"):
        cpath = base / MODEL_CARD
        if card is None and cpath.is_file():
            try:
                card = json.loads(cpath.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{cpath} is not valid JSON: {e}") from None
            if not isinstance(card, dict):
                raise ValueError(f"{cpath} must hold a JSON object")
        dpath = base / TRAINING_DIGESTS
        if digests is None and dpath.is_file():
            lines = [ln.strip() for ln in dpath.read_text().splitlines() if ln.strip()]
            bad = [ln for ln in lines if len(ln) != DIGEST_HEX or any(c not in "0123456789abcdef" for c in ln)]
            if bad:
                raise ValueError(f"{dpath}: {len(bad)} line(s) are not {DIGEST_HEX} hex digits, e.g. {bad[0]!r}")
            digests = set(lines)
    return card, digests


def write_provenance(folder: str | os.PathLike, card: dict | None, digests: Iterable[str] | None) -> None:
    """Write ``model_card.json`` and ``training_images.sha256`` into ``folder`` (atomically).

    ``None`` skips that file. Digests are written sorted, one per line.
    """
    folder = Path(folder)
    if card is not None:
        atomic_write_json(folder / MODEL_CARD, card)
    if digests is not None:
        atomic_write_text(folder / TRAINING_DIGESTS, "".join(f"{d}\n" for d in sorted(set(digests))))
