"""posegen.filter: quality filter of generated images (pose fidelity OKS, sanity)."""

from .scores import FilterScores, oks, score_output

__all__ = ["FilterScores", "oks", "score_output"]
