"""posegen.filter: quality filter of generated images (version 2).

- :mod:`.scores`: :func:`filter_batch` / :func:`score_output` — sanity, near-copy of the source,
  pose fidelity (OKS) and identity (re-ID cosine) checks, one reason per rejection in a documented
  order, every computed score returned;
- :mod:`.identity`: :class:`IdentityReference` (re-ID embeddings of the real images) and
  :func:`load_embedder`;
- :mod:`.refilter`: :func:`refilter` — re-score an existing augment output folder.

``oks`` is re-exported from :mod:`posegen.metrics` for older callers.
"""

from .identity import IdentityReference, load_embedder
from .refilter import refilter
from .scores import FILTER_COLUMNS, IMPLAUSIBLE_TARGET, REASON_ORDER, FilterScores, filter_batch, oks, score_output

__all__ = [
    "FilterScores",
    "filter_batch",
    "score_output",
    "refilter",
    "oks",
    "IdentityReference",
    "load_embedder",
    "FILTER_COLUMNS",
    "IMPLAUSIBLE_TARGET",
    "REASON_ORDER",
]
