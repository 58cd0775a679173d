"""Visual report of an augment run: report.html contact sheet and score plots.

- :func:`write_report` (:mod:`.html`): ``OUT/report.html`` (source | target skeleton | output |
  scores, kept and rejected sections) with thumbnails under ``OUT/.posegen/report/``, and
- :func:`plot_scores` (:mod:`.plots`): ``OUT/.posegen/report/scores.png``, histograms of the filter's scores,
  kept vs rejected, with the thresholds drawn.
"""

from .html import PLOT_NAME, REPORT_NAME, THUMB_DIR, sample_rows, skeleton_image, write_report
from .plots import plot_scores

__all__ = ["write_report", "plot_scores", "sample_rows", "skeleton_image", "REPORT_NAME", "PLOT_NAME", "THUMB_DIR"]
