"""posegen.filter: quality filter of generated images (version 2).

- :mod:`.scores`: :func:`filter_batch` / :func:`score_output` — sanity, image artifacts (holes,
  seams, smears), near-copy of the source, pose fidelity (OKS) and identity (re-ID cosine) checks, one reason per rejection in a documented
  order, every computed score returned;
- :mod:`.artifacts`: :func:`artifact_scores` — hole / seam / smear scores of an output against its
  source at 256x128;
- :mod:`.identity`: :class:`IdentityReference` (re-ID embeddings of the real images) and
  :func:`load_embedder`;
- :mod:`.refilter`: :func:`refilter` — re-score an existing augment output folder.

``oks`` is re-exported from :mod:`posegen.metrics` for older callers.
"""

from .artifacts import ARTIFACT_COLUMNS, artifact_scores
from .identity import IdentityReference, load_embedder
from .refilter import refilter
from .scores import (
    FILTER_COLUMNS, IMPLAUSIBLE_TARGET, REASON_ORDER, UNHONOURED_TARGET, FilterScores, filter_batch, oks, score_output,
)  # fmt: skip

__all__ = [
    "FilterScores",
    "artifact_scores",
    "ARTIFACT_COLUMNS",
    "filter_batch",
    "score_output",
    "refilter",
    "oks",
    "IdentityReference",
    "load_embedder",
    "FILTER_COLUMNS",
    "IMPLAUSIBLE_TARGET",
    "UNHONOURED_TARGET",
    "REASON_ORDER",
]
