"""Pose-validity prior over COCO-17 poses (after RePoseDM's learned pose-validity field).

- :class:`PoseValidityPrior` (``energy`` differentiable, ``score`` numpy, ``config.threshold``),
  :func:`load_pose_prior` (the shipped weights in ``posegen/prior/weights`` or a local folder);
- :func:`perturb_pose`: the implausible poses used to evaluate it;
- :func:`train_pose_prior` and the calibration / AUC helpers in :mod:`posegen.prior.train`.
"""

from .model import PoseValidityPrior, load_pose_prior, normalise_pose
from .perturb import PERTURBATIONS, perturb_pose
from .train import calibrate_threshold, evaluate_auc, load_pose_bank, save_pose_prior, train_pose_prior

__all__ = [
    "PoseValidityPrior",
    "load_pose_prior",
    "normalise_pose",
    "perturb_pose",
    "PERTURBATIONS",
    "train_pose_prior",
    "calibrate_threshold",
    "evaluate_auc",
    "load_pose_bank",
    "save_pose_prior",
]
