"""Pose-guided re-posing diffusion model: rendering, network, samplers, pipeline, pairs, training.

The denoiser (:class:`ReposeUNet`) sees the noisy target, the source image and the source/target
pose maps concatenated, plus, per the recipe's ``model.conditioning``: texture-encoder tokens with
cross-attention (PIDM, Bhunia et al. 2023), pose-aligned texture features from a keypoint flow with
learned coarse-to-fine refinement (RePoseDM) and face / upper / lower body focal tokens (MCLD).
Trained with DDPM (Ho et al. 2020) on same-identity (source, target) pairs with condition dropout
and EMA; sampled with DDIM (Song et al. 2021), DPM-Solver++ (Lu et al. 2022) and friends, with
disentangled classifier-free guidance and optional pose-prior gradient guidance.
"""

from .model import ReposeUNet
from .pairs import PairDataset, make_pairs
from .latent_pipeline import LatentReposePipeline, load_latent_pipeline
from .pipeline import ReposePipeline, default_model_dir, load_pipeline
from .render import POSE_CHANNELS, pose_to_rgb, render_pose, render_poses
from .schedulers import SCHEDULERS, make_scheduler
from .train import TrainingError, condition_dropout, denoising_loss, train

__all__ = [
    "ReposeUNet",
    "ReposePipeline",
    "load_pipeline",
    "default_model_dir",
    "LatentReposePipeline",
    "load_latent_pipeline",
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
    "condition_dropout",
]
