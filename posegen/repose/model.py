"""The pose-conditioned denoising network (first version: concatenation conditioning).

:class:`ReposeUNet` is a diffusers ``UNet2DModel`` whose input is the channel-wise concatenation of

- the noisy target image ``x_t``            (3 channels),
- the source image                          (3 channels, ``[-1, 1]``),
- the source pose maps                      (36 channels, :func:`~posegen.repose.render.render_pose`),
- the target pose maps                      (36 channels),

so ``in_channels = 78`` and ``out_channels = 3`` (the noise ``eps`` or the velocity ``v``, per the
training recipe's ``prediction_type``). This is the simplest form of the source-image + target-pose
conditioning of pose-guided diffusion (PIDM, Bhunia et al. 2023, which uses a separate texture
encoder and cross-attention instead; RePoseDM and MCLD refine it further). The denoiser is trained
with DDPM (Ho et al. 2020), see :mod:`posegen.repose.train`.

The model is saved in the diffusers layout (``config.json`` + ``diffusion_pytorch_model.safetensors``)
with :meth:`save_pretrained` and loaded, from a local folder only, with :meth:`from_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .render import POSE_CHANNELS

__all__ = ["ReposeUNet", "IMAGE_CHANNELS", "IN_CHANNELS"]

#: RGB channels of the noisy target, the source and the output.
IMAGE_CHANNELS = 3
#: Input channels of the inner UNet: noisy target + source + source pose + target pose.
IN_CHANNELS = IMAGE_CHANNELS * 2 + POSE_CHANNELS * 2


class ReposeUNet(ModelMixin, ConfigMixin):
    """Pose-guided denoiser ``eps_theta(x_t, t | source, source_pose, target_pose)``.

    Args (all stored in ``config.json``):
        resolution: ``(height, width)`` of the images, pixels; divisible by
            ``2 ** (len(block_out_channels) - 1)``.
        block_out_channels: channels of each resolution level (diffusers ``UNet2DModel``).
        layers_per_block: ResNet layers per level.
        attention_levels: one bool per level: ``AttnDownBlock2D``/``AttnUpBlock2D`` where True,
            ``DownBlock2D``/``UpBlock2D`` elsewhere (the up path mirrors the down path). The middle
            block always has self-attention (diffusers' ``UNetMidBlock2D``).
        norm_num_groups: GroupNorm groups; must divide every entry of ``block_out_channels``.
        pose_sigma, limb_width, min_score: how pose maps are rendered for this model
            (:func:`~posegen.repose.render.render_pose`); the pipeline reads them from here, so a
            saved model always gets the conditioning it was trained with.

    Raises:
        ValueError: mismatched ``attention_levels``/``block_out_channels`` lengths, a resolution
            not divisible by the down-sampling factor, or groups not dividing the channels.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        resolution: tuple[int, int] = (128, 64),
        block_out_channels: tuple[int, ...] = (64, 128, 256, 256),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (False, False, True, True),
        norm_num_groups: int = 16,
        pose_sigma: float = 1.5,
        limb_width: float = 1.0,
        min_score: float = 0.5,
    ):
        super().__init__()
        resolution = tuple(int(v) for v in resolution)
        block_out_channels = tuple(int(c) for c in block_out_channels)
        attention_levels = tuple(bool(a) for a in attention_levels)
        if len(attention_levels) != len(block_out_channels):
            raise ValueError(
                f"attention_levels needs one entry per block ({len(block_out_channels)}), got {len(attention_levels)}"
            )
        f = 2 ** (len(block_out_channels) - 1)
        if len(resolution) != 2 or resolution[0] % f or resolution[1] % f:
            raise ValueError(f"resolution {resolution} (height, width) must be divisible by {f}")
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={norm_num_groups} must divide every block's channels, not {bad}")
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
        head_dim = 8 if all(c % 8 == 0 for c in block_out_channels) else None
        self.unet = UNet2DModel(
            sample_size=resolution,
            in_channels=IN_CHANNELS,
            out_channels=IMAGE_CHANNELS,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            attention_head_dim=head_dim,
        )

    @property
    def resolution(self) -> tuple[int, int]:
        """Model ``(height, width)`` in pixels."""
        return tuple(int(v) for v in self.config.resolution)

    @classmethod
    def from_config_recipe(cls, model_cfg, *, min_score: float = 0.5) -> "ReposeUNet":
        """A freshly initialised model from a recipe's :class:`~posegen.recipe.ModelConfig`.

        Args:
            model_cfg: the recipe's ``model`` section.
            min_score: joint presence threshold for pose rendering (the recipe's ``pose.min_score``).
        """
        return cls(
            resolution=tuple(model_cfg.resolution),
            block_out_channels=tuple(model_cfg.block_out_channels),
            layers_per_block=model_cfg.layers_per_block,
            attention_levels=tuple(model_cfg.attention_levels),
            norm_num_groups=model_cfg.norm_num_groups,
            pose_sigma=float(model_cfg.pose_sigma),
            limb_width=float(model_cfg.limb_width),
            min_score=float(min_score),
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "ReposeUNet":
        """Load a saved model from a **local** folder (``config.json`` + ``*.safetensors``).

        Raises:
            FileNotFoundError: the folder or its ``config.json`` is missing (never downloads).
        """
        path = Path(pretrained_model_name_or_path)
        sub = kwargs.get("subfolder")
        folder = path / sub if sub else path
        if not folder.is_dir():
            raise FileNotFoundError(f"ReposeUNet model folder not found: {folder}")
        if not (folder / cls.config_name).is_file():
            raise FileNotFoundError(f"ReposeUNet config missing: {folder / cls.config_name}")
        kwargs.setdefault("local_files_only", True)
        return super().from_pretrained(str(pretrained_model_name_or_path), **kwargs)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        source: torch.Tensor,
        source_pose: torch.Tensor,
        target_pose: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the noise (or velocity) of the noisy target.

        Args:
            sample: noisy target ``x_t``, ``[B, 3, h, w]``.
            timestep: ``[B]`` or a scalar (int / 0-d tensor), in ``[0, num_train_timesteps)``.
            source: source image ``[B, 3, h, w]`` in ``[-1, 1]``.
            source_pose: ``[B, 36, h, w]`` in ``[0, 1]`` (source keypoints, model frame).
            target_pose: ``[B, 36, h, w]`` in ``[0, 1]`` (target keypoints, model frame).

        Returns:
            ``[B, 3, h, w]`` in the dtype of ``sample``: ``eps`` or ``v`` per the training recipe.

        Raises:
            ValueError: a batch/spatial/channel mismatch (message names the inputs).
        """
        b, c, h, w = sample.shape
        expect = {
            "source": (source, IMAGE_CHANNELS),
            "source_pose": (source_pose, POSE_CHANNELS),
            "target_pose": (target_pose, POSE_CHANNELS),
        }
        if c != IMAGE_CHANNELS:
            raise ValueError(f"sample must be [B, 3, h, w], got {tuple(sample.shape)}")
        for name, (t, ch) in expect.items():
            if t.ndim != 4 or t.shape[0] != b or t.shape[1] != ch or t.shape[2:] != (h, w):
                raise ValueError(f"{name} must be [{b}, {ch}, {h}, {w}], got {tuple(t.shape)}")
        dtype = self.unet.conv_in.weight.dtype
        x = torch.cat(
            [sample.to(dtype), source.to(dtype), source_pose.to(dtype), target_pose.to(dtype)], dim=1
        )
        if not torch.is_tensor(timestep):
            timestep = torch.tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        out = self.unet(x, timestep.to(sample.device)).sample
        return out.to(sample.dtype)
