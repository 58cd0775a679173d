"""The pose-validity prior: a denoising autoencoder over normalised COCO-17 poses (after RePoseDM).

RePoseDM guides pose-guided diffusion for re-ID with a learned pose-validity field that pushes
implausible target poses back towards plausible ones; this module is posegen's version of that idea
(its own design, not a port of RePoseDM's code).
posegen's field is the residual of a **denoising autoencoder** ``D`` (Vincent et al. 2008): trained
to map noisy, partly masked real poses back to the clean pose, ``D`` moves a pose towards the
manifold of real poses, and by the denoising score-matching result (Vincent 2011; Alain & Bengio
2014) ``D(z) - z`` is proportional to the score ``grad log p(z)`` at the training noise level. So

    energy(z) = mean over present joints j of || z_j - D(z)_j ||^2

is ~0 on plausible poses, grows with the distance to the manifold, and its negative gradient
(treating ``D(z)`` as locally constant, ``-grad E ~ 2 (D(z) - z)``) points back to valid poses: a
pose-validity field usable for gradient guidance. An MLP is enough at this size (17 joints); it is
small (< 1 MB), trains in about a minute on one CPU core, and handles missing joints with a
visibility mask in its input.

Normalisation (which makes the energy invariant to the pose's position and size in the image):
with ``P`` the present joints (score >= ``config.min_score``), ``c`` = their centroid and
``s`` = their RMS distance to ``c`` (pixels), each present joint becomes ``z_j = (p_j - c) / s``
(x right, y down kept: the prior knows which way is up); absent joints are zeroed and flagged in
the mask. The network sees ``[z (34 values), mask (17)]`` and outputs the 34 denoised values.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..pose.keypoints import NUM_KEYPOINTS

__all__ = ["PoseValidityPrior", "load_pose_prior", "normalise_pose", "shipped_weights_dir", "WEIGHTS_FILE"]

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
_EPS_SCALE = 1e-6  # pixels: below this RMS radius the pose has no defined scale (energy NaN)


def normalise_pose(keypoints: torch.Tensor, min_score: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre and scale poses (differentiably in x, y).

    Args:
        keypoints: ``float [B, 17, 3]`` ``(x, y, score)`` in pixels of any frame.
        min_score: score from which a joint is present.

    Returns:
        ``(z, mask, scale)``: ``z`` ``float32 [B, 17, 2]`` = ``(p - centroid) / rms_radius`` for present
        joints and 0 elsewhere; ``mask`` ``float32 [B, 17]`` (1 = present); ``scale`` ``float32 [B]``
        = the RMS radius in pixels (0 when fewer than 2 distinct present joints).
    """
    kp = keypoints.to(torch.float32)
    mask = (kp[..., 2] >= min_score).to(torch.float32)
    n = mask.sum(dim=1).clamp(min=1.0)
    xy = kp[..., :2] * mask[..., None]
    centre = xy.sum(dim=1) / n[:, None]
    d = (kp[..., :2] - centre[:, None, :]) * mask[..., None]
    var = (d**2).sum(dim=(1, 2)) / n
    ok = var > _EPS_SCALE**2
    scale = torch.sqrt(torch.where(ok, var, torch.ones_like(var)))
    z = d / scale[:, None, None]
    return z, mask, torch.where(ok, scale, torch.zeros_like(scale))


class PoseValidityPrior(ModelMixin, ConfigMixin):
    """Learned plausibility of COCO-17 poses; ``energy`` is low for real poses (see the module docstring).

    Args (stored in ``config.json``):
        hidden: width of the MLP's hidden layers.
        layers: number of hidden layers (SiLU activations, LayerNorm-free).
        min_score: score from which a joint counts as present.
        min_joints: fewest present joints for which the energy is defined; below it, NaN.
        threshold: calibrated energy threshold (``is_plausible = energy <= threshold``); NaN until
            calibrated. The shipped weights are trained on Market-1501 annotations and BlazePose
            poses of CUHK03 train, and use the larger of the two per-source 99th percentiles of the
            energy on held-out calibration poses of each (see ``posegen/prior/train.py``), so real
            poses of either annotation style are rarely flagged.
        training: a free-form dict describing how the weights were made (seed, steps, data).
    """

    @register_to_config
    def __init__(
        self,
        hidden: int = 256,
        layers: int = 3,
        min_score: float = 0.5,
        min_joints: int = 8,
        threshold: float = float("nan"),
        training: dict | None = None,
    ) -> None:
        super().__init__()
        dims = [NUM_KEYPOINTS * 3] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.SiLU()]
        mods.append(nn.Linear(dims[-1], NUM_KEYPOINTS * 2))
        self.net = nn.Sequential(*mods)

    def denoise(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The autoencoder ``D``: normalised poses ``[B, 17, 2]`` and mask ``[B, 17]`` -> ``[B, 17, 2]``.

        The prediction is a residual on ``z`` (``z + net(...)``), for present and absent joints alike
        (for absent ones it is an inpainting guess)."""
        inp = torch.cat([(z * mask[..., None]).flatten(1), mask], dim=1)
        return z * mask[..., None] + self.net(inp).view(-1, NUM_KEYPOINTS, 2)

    def energy(self, keypoints: torch.Tensor) -> torch.Tensor:
        """Implausibility of each pose (lower = more plausible).

        Args:
            keypoints: ``float [B, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels of any frame (the
                energy is invariant to translation and uniform scaling, not to rotation or flips of
                y). Joints with score < ``config.min_score`` are ignored.

        Returns:
            ``float32 [B]`` >= 0, differentiable in x and y: the mean squared residual
            ``|z_j - D(z)_j|^2`` over present joints, in normalised units (RMS radius = 1). NaN for
            a pose with fewer than ``config.min_joints`` present joints or all joints at one point;
            such rows get a zero gradient, so gradient guidance must skip them (e.g. sum
            ``energy[~energy.isnan()]``).

        Raises:
            ValueError: the input is not ``[B, 17, 3]``.
        """
        if keypoints.ndim != 3 or tuple(keypoints.shape[1:]) != (NUM_KEYPOINTS, 3):
            raise ValueError(f"keypoints must be [B, 17, 3] (COCO-17 x, y, score), got {tuple(keypoints.shape)}")
        p = next(self.parameters())
        keypoints = keypoints.to(device=p.device)
        z, mask, scale = normalise_pose(keypoints, self.config.min_score)
        z, mask = z.to(p.dtype), mask.to(p.dtype)
        rec = self.denoise(z, mask)
        n = mask.sum(dim=1)
        e = (((z - rec) ** 2).sum(dim=-1) * mask).sum(dim=1) / n.clamp(min=1.0)
        valid = (n >= self.config.min_joints) & (scale > 0)
        return torch.where(valid, e, torch.full_like(e, float("nan"))).to(torch.float32)

    @torch.no_grad()
    def score(self, keypoints: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """:meth:`energy` for numpy poses, without gradients.

        Args:
            keypoints: ``float [B, 17, 3]`` or one pose ``[17, 3]``, pixels (any frame).
            batch_size: poses per forward pass.

        Returns:
            ``float32 [B]`` (``[1]`` for one pose); NaN where the energy is undefined.
        """
        kp = np.asarray(keypoints, dtype=np.float32)
        if kp.ndim == 2:
            kp = kp[None]
        out = [self.energy(torch.from_numpy(kp[i : i + batch_size])).cpu().numpy() for i in range(0, len(kp), batch_size)]
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def is_plausible(self, keypoints: np.ndarray) -> np.ndarray:
        """``score(keypoints) <= config.threshold`` as ``bool [B]`` (False where the energy is NaN).

        Raises:
            ValueError: the prior has no calibrated threshold.
        """
        if not np.isfinite(self.config.threshold):
            raise ValueError("this pose prior has no calibrated threshold (config.threshold is NaN)")
        e = self.score(keypoints)
        return np.where(np.isnan(e), False, e <= self.config.threshold)


def shipped_weights_dir() -> Path:
    """The folder of the weights shipped inside the package (``posegen/prior/weights``)."""
    return Path(str(resources.files("posegen.prior") / "weights"))


def load_pose_prior(path: str | os.PathLike | None = None) -> PoseValidityPrior:
    """Load a pose prior from a local folder (``config.json`` + ``diffusion_pytorch_model.safetensors``).

    Args:
        path: the folder; None for the weights shipped with posegen (``posegen/prior/weights``).

    Returns:
        The prior in eval mode on the CPU, gradients of its parameters disabled (gradients w.r.t.
        the keypoints still flow).

    Raises:
        FileNotFoundError: the folder or one of its two files is missing (the message names it).
        Nothing is ever downloaded (``local_files_only=True``).
    """
    folder = shipped_weights_dir() if path is None else Path(path)
    for f in (folder, folder / "config.json", folder / WEIGHTS_FILE):
        if not f.exists():
            raise FileNotFoundError(f"pose prior weights not found: {f} (expected a folder with config.json and {WEIGHTS_FILE})")
    model = PoseValidityPrior.from_pretrained(str(folder), local_files_only=True)
    model.eval()
    model.requires_grad_(False)
    return model
