"""posegen.downstream: does an augmented dataset train a better re-ID model? (torchreid)

:func:`evaluate_downstream` trains torchreid models (Zhou et al., deep-person-reid) from scratch on
the real training set, on real + synthetic images and on real + duplicated real images, with the
same seeds and hyper-parameters, evaluates each on the real query/gallery only (Market-1501 rule of
Zheng et al. 2015) and writes a report (JSON, CSV, Markdown, CMC plot).

Modules: :mod:`~posegen.downstream.data` (manifests -> training sets, real fraction, leak check),
:mod:`~posegen.downstream.reid` (one torchreid training + evaluation),
:mod:`~posegen.downstream.report` (aggregation and files), :mod:`~posegen.downstream.run` (the
protocol). torchreid is imported lazily, on the first training.
"""

from .data import (
    ARMS,
    LeakError,
    RealData,
    TrainSet,
    build_train_sets,
    check_leaks,
    load_real,
    load_synthetic,
    make_flip_synthetic,
    relabel,
    subsample_real,
)
from .reid import LOSSES, MODELS, load_init_weights, train_and_evaluate
from .report import METRICS, markdown_table, summarize_runs, write_report
from .run import SYNTHETIC_STAND_INS, evaluate_downstream

__all__ = [
    "ARMS",
    "LOSSES",
    "METRICS",
    "MODELS",
    "SYNTHETIC_STAND_INS",
    "LeakError",
    "RealData",
    "TrainSet",
    "build_train_sets",
    "check_leaks",
    "evaluate_downstream",
    "load_init_weights",
    "load_real",
    "load_synthetic",
    "make_flip_synthetic",
    "markdown_table",
    "relabel",
    "subsample_real",
    "summarize_runs",
    "train_and_evaluate",
    "write_report",
]
