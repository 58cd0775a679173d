"""Pose-guided re-posing diffusion model: rendering, network, samplers, pipeline, pairs, training.

First version: concatenation conditioning (noisy target + source image + source/target pose maps
into one UNet), trained with DDPM (Ho et al. 2020) on same-identity (source, target) pairs, sampled
with DDIM (Song et al. 2021), DPM-Solver++ (Lu et al. 2022) and friends; the idea of a diffusion
model conditioned on a source image and a target pose follows PIDM (Bhunia et al. 2023).
"""

from .model import ReposeUNet
from .pairs import PairDataset, make_pairs
from .pipeline import ReposePipeline, load_pipeline
from .render import POSE_CHANNELS, pose_to_rgb, render_pose, render_poses
from .schedulers import SCHEDULERS, make_scheduler
from .train import TrainingError, denoising_loss, train

__all__ = [
    "ReposeUNet",
    "ReposePipeline",
    "load_pipeline",
    "make_scheduler",
    "SCHEDULERS",
    "render_pose",
    "render_poses",
    "pose_to_rgb",
    "POSE_CHANNELS",
    "make_pairs",
    "PairDataset",
    "train",
    "TrainingError",
    "denoising_loss",
]
