"""Reference re-ID embeddings of a dataset's real images, for the filter's identity checks.

The identity checks (:mod:`posegen.filter.scores`) compare a generated image with its source and
with the *other* real images of the same identity. :class:`IdentityReference` embeds those real
images once (with a :class:`posegen.metrics.ReidEmbedder`) and serves them by path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..data.images import read_image

__all__ = ["IdentityReference", "load_embedder"]


def load_embedder(path: str | os.PathLike | None):
    """The identity embedder named by ``path``: a :class:`posegen.metrics.ReidEmbedder` from a
    local ONNX file; the garment-colour :class:`posegen.filter.garment.ColourHistogramEmbedder`
    when ``path`` is the string ``"colour-histogram"`` (the ``deepfashion`` recipe's choice: a
    person re-ID model tells garments apart poorly, see ``benchmarks/results/fashion_identity.md``);
    None when ``path`` is None.

    Raises:
        FileNotFoundError: ``path`` (or its external data file) does not exist; nothing is
            downloaded.
    """
    if path is None:
        return None
    from .garment import COLOUR_HISTOGRAM, ColourHistogramEmbedder

    if str(path) == COLOUR_HISTOGRAM:
        return ColourHistogramEmbedder()
    from ..metrics import ReidEmbedder

    return ReidEmbedder(Path(path).expanduser())


#: Reference images larger than this (pixels, longest side) are downscaled when read (the embedder
#: resizes them to its small input anyway); keeps memory bounded for huge photos.
_MAX_SIDE = 2048


class IdentityReference:
    """Embeddings of real images: each source, and each identity's real images in one split.

    Args:
        embedder: a :class:`posegen.metrics.ReidEmbedder` (``embed(list of uint8 [H, W, 3]) ->
            float32 [N, D]``, L2-normalised rows).
        manifest: the dataset's manifest (``path`` relative to ``root``, ``pid``, ``split``, and
            ``synthetic`` when present; synthetic rows are never references).
        root: the dataset folder the paths are relative to.
        pids: identities whose reference images are embedded (default: all).
        split: the split the "other images" come from (``"train"``).
        extra_paths: more paths (e.g. sources in other splits) to embed.

    An unreadable image is left out (and counted in :attr:`unreadable`), so a broken file never
    stops a run.
    """

    def __init__(
        self,
        embedder,
        manifest: pd.DataFrame,
        root: str | os.PathLike,
        *,
        pids: Iterable[int] | None = None,
        split: str = "train",
        extra_paths: Iterable[str] = (),
    ) -> None:
        self.root = Path(root)
        m = manifest
        if "synthetic" in m:
            m = m[~m["synthetic"].astype(bool)]
        m = m[m["split"] == split]
        if pids is not None:
            m = m[m["pid"].isin(set(int(p) for p in pids))]
        self._pool = {int(pid): sorted(g["path"]) for pid, g in m.groupby("pid")}
        paths = sorted(set(m["path"]) | set(extra_paths))
        images, ok = [], []
        self.unreadable: list[str] = []
        for p in paths:
            try:
                images.append(read_image(self.root / p, max_side=_MAX_SIDE))
                ok.append(p)
            except Exception:  # noqa: BLE001 - a broken image is skipped, the run goes on
                self.unreadable.append(p)
        emb = embedder.embed(images) if images else np.zeros((0, 0), dtype=np.float32)
        self._emb = {p: e for p, e in zip(ok, emb)}
        self.dim = int(emb.shape[1]) if len(emb) else 0

    def embedding(self, path: str) -> np.ndarray | None:
        """``float32 [D]`` embedding of a real image (by path relative to ``root``), or None."""
        return self._emb.get(path)

    def others(self, path: str, pid: int) -> np.ndarray:
        """``float32 [M, D]`` embeddings of ``pid``'s reference images except ``path`` (``M`` may be 0)."""
        rows = [self._emb[p] for p in self._pool.get(int(pid), ()) if p != path and p in self._emb]
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)
