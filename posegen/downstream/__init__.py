"""posegen.downstream: does an augmented dataset train a better re-ID model? (torchreid)

:func:`evaluate_downstream` fine-tunes torchreid models (Zhou et al., deep-person-reid; by default
OSNet x0.25 pretrained on MSMT17, converted offline from ONNX) on the real training set, on real +
posegen images, on real + duplicated and on real + flipped real images, with the same seeds and
hyper-parameters, evaluates each on the real query/gallery only (Market-1501 rule of
Zheng et al. 2015) and writes a report (JSON, CSV, Markdown, CMC plot).

Modules: :mod:`~posegen.downstream.data` (manifests -> training sets, real fraction, leak check),
:mod:`~posegen.downstream.reid` (one torchreid training + evaluation),
:mod:`~posegen.downstream.pretrained` (the ONNX -> torchreid conversion),
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
    GeneratorCheck,
    check_generator_leak,
    flip_paths,
    relabel,
    subsample_real,
)
from .reid import LOSSES, MODELS, load_init_weights, train_and_evaluate
from .report import METRICS, markdown_table, summarize_runs, write_report
from .pretrained import calibrate_identity_batchnorm, default_osnet_onnx, load_onnx_osnet, osnet_state_dict_from_onnx
from .run import evaluate_downstream

__all__ = [
    "ARMS",
    "LOSSES",
    "METRICS",
    "MODELS",
    "LeakError",
    "RealData",
    "TrainSet",
    "build_train_sets",
    "check_leaks",
    "evaluate_downstream",
    "load_init_weights",
    "load_real",
    "load_synthetic",
    "GeneratorCheck",
    "check_generator_leak",
    "flip_paths",
    "markdown_table",
    "relabel",
    "subsample_real",
    "summarize_runs",
    "train_and_evaluate",
    "write_report",
    "calibrate_identity_batchnorm",
    "default_osnet_onnx",
    "load_onnx_osnet",
    "osnet_state_dict_from_onnx",
]
