"""posegen.augment: the main job (targets -> generation -> filter -> output tree + manifest)."""

from .run import MANIFEST_COLUMNS, OutputDirError, augment, pose_bank_extra, summarize, synthetic_name
from .targets import choose_targets

__all__ = [
    "MANIFEST_COLUMNS",
    "OutputDirError",
    "augment",
    "pose_bank_extra",
    "summarize",
    "synthetic_name",
    "choose_targets",
]
