"""The pose-conditioned denoising network: concatenation, texture cross-attention, pose-aligned
texture features and multi-focal tokens, each switchable for ablations.

:class:`ReposeUNet` predicts the noise (or ``v``, or ``x0``, per the training recipe's
``prediction_type``) of a noisy target image ``x_t`` given a source image, the source pose and the
target pose. Its input is always the channel-wise concatenation of

- the noisy target image ``x_t``            (3 channels),
- the source image                          (3 channels, ``[-1, 1]``),
- the source pose maps                      (36 channels, :func:`~posegen.repose.render.render_pose`),
- the target pose maps                      (36 channels),

and three conditioning flags (``config.json``; all False = the first, concatenation-only model, a
diffusers ``UNet2DModel`` on those 78 channels; old saved configs load as that model) add:

``texture_attention`` (PIDM, Bhunia et al. 2023, "Person Image Synthesis via Denoising Diffusion
Model": texture encoder + cross-attention)
    A :class:`TextureEncoder` (diffusers ``ResnetBlock2D``/``Downsample2D`` pyramid over the source
    image and its pose maps) gives features at every UNet resolution; the features of the levels
    where ``attention_levels`` is True are flattened, projected to ``cross_attention_dim`` and given
    learned 2-D position embeddings (:class:`TextureTokens`). The denoiser becomes a diffusers
    ``UNet2DConditionModel`` whose ``CrossAttnDownBlock2D``/``CrossAttnUpBlock2D`` blocks (at the
    ``attention_levels``) and ``UNetMidBlock2DCrossAttn`` attend to those tokens.

``pose_aligned`` (RePoseDM, recurrent pose alignment)
    :func:`posegen.repose.warp.limb_flow` gives a per-limb flow from the target frame to the source
    frame. The warped source image and the flow's weight map are concatenated at the UNet input
    (4 more channels). The texture encoder's features are warped level by level, coarsest first;
    at each level a small zero-initialised conv (:class:`FlowRefiner`) predicts a residual to the
    grid from ``[warped features, target pose maps at that scale]``, and the accumulated residual
    is upsampled to the next finer level (coarse-to-fine refinement). The aligned features are
    injected through the ControlNet interface of ``UNet2DConditionModel``: zero-initialised 1x1
    convs map them to every skip connection (``down_block_additional_residuals``) and to the
    middle block (``mid_block_additional_residual``), so a fresh model starts as the plain UNet.

``focal_tokens`` (MCLD, multi-focal conditioning)
    :func:`posegen.repose.focal.focal_boxes` finds the face / upper-body / lower-body boxes of the
    source person; :func:`~posegen.repose.focal.crop_regions` crops them from the source image and a
    shared small conv encoder (:class:`FocalEncoder`) turns each crop into
    ``focal_tokens_per_region`` tokens with a learned region embedding, appended to the
    cross-attention context. A region that is not found is masked out in ``encoder_attention_mask``.

Whenever there are cross-attention tokens, one learned, always-visible "null" token leads the
context, so a sample whose every other token is masked still has a well-defined attention.

Condition dropout / classifier-free guidance: ``forward`` takes ``drop_pose`` and
``drop_appearance`` (bool ``[B]``), used both by training (``train.pose_dropout``,
``train.appearance_dropout``) and by the pipeline's disentangled guidance:

- pose dropped: source and target pose maps are zeroed (also in the texture encoder's input), the
  flow is replaced by the identity grid with weight 0 (so warped images / features are 0);
- appearance dropped: the source image and the warped source are zeroed, the texture tokens are
  replaced by a learned null token (plus their position embeddings), the aligned features are
  zeroed and the focal tokens are masked (and zeroed): the output does not depend on the source
  image at all.

The model is saved in the diffusers layout (``config.json`` + ``diffusion_pytorch_model.safetensors``)
with :meth:`save_pretrained` and loaded, from a local folder only, with :meth:`from_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DConditionModel, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from torch import nn

from .render import POSE_CHANNELS

__all__ = [
    "ReposeUNet",
    "TextureEncoder",
    "TextureTokens",
    "FocalEncoder",
    "FlowRefiner",
    "IMAGE_CHANNELS",
    "IN_CHANNELS",
    "NUM_REGIONS",
]

#: RGB channels of the noisy target, the source and the output.
IMAGE_CHANNELS = 3
#: Input channels of the concatenation UNet: noisy target + source + source pose + target pose.
IN_CHANNELS = IMAGE_CHANNELS * 2 + POSE_CHANNELS * 2
#: Focal regions (face, upper body, lower body; :data:`posegen.repose.focal.REGIONS`).
NUM_REGIONS = 3


def _zero_module(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class TextureEncoder(nn.Module):
    """A conv pyramid over the source image and its pose maps (PIDM's texture encoder, small).

    Level ``l`` is a diffusers ``ResnetBlock2D`` (no time embedding) at ``1 / 2**l`` of the input
    resolution; levels are joined by ``Downsample2D`` (strided conv).

    Args:
        in_channels: input channels (3 RGB + 36 pose maps).
        channels: output channels of each level (one per UNet level).
        norm_num_groups: GroupNorm groups (must divide every entry of ``channels``).

    Input ``float [B, in_channels, H, W]``; output: a list of ``float [B, channels[l], H / 2**l,
    W / 2**l]``, one per level, finest first, in the input's dtype.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], norm_num_groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = channels[0]
        for i, c in enumerate(channels):
            if i > 0:
                self.downs.append(Downsample2D(prev, use_conv=True, out_channels=prev, padding=1, name="op"))
            self.blocks.append(
                ResnetBlock2D(in_channels=prev, out_channels=c, temb_channels=None, groups=norm_num_groups)
            )
            prev = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.conv_in(x)
        feats = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                h = self.downs[i - 1](h)
            h = block(h, None)
            feats.append(h)
        return feats


class TextureTokens(nn.Module):
    """Texture features -> cross-attention tokens (flatten, linear projection, learned 2-D position
    embedding per level), after PIDM.

    Args:
        channels: channels of the levels that give tokens.
        sizes: ``(h, w)`` of those levels, pixels of the feature maps.
        dim: token width (``cross_attention_dim``).

    ``forward(feats)`` takes the features of those levels (``[B, C_l, h_l, w_l]`` each) and returns
    ``float [B, N, dim]`` with ``N = sum(h_l * w_l)`` (row-major, coarser levels after finer).
    :meth:`null` gives the source-independent replacement used when the appearance is dropped:
    a learned vector plus the same position embeddings, ``[1, N, dim]``.
    """

    def __init__(self, channels: tuple[int, ...], sizes: tuple[tuple[int, int], ...], dim: int):
        super().__init__()
        self.sizes = tuple((int(h), int(w)) for h, w in sizes)
        self.proj = nn.ModuleList(nn.Linear(c, dim) for c in channels)
        self.pos = nn.ParameterList(nn.Parameter(torch.randn(h * w, dim) * 0.02) for h, w in self.sizes)
        self.null_token = nn.Parameter(torch.zeros(1, 1, dim))

    @property
    def num_tokens(self) -> int:
        return sum(h * w for h, w in self.sizes)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for f, proj, pos in zip(feats, self.proj, self.pos):
            out.append(proj(f.flatten(2).transpose(1, 2)) + pos.to(f.dtype))
        return torch.cat(out, dim=1)

    def null(self) -> torch.Tensor:
        pos = torch.cat(list(self.pos), dim=0)[None]
        return self.null_token + pos


class FocalEncoder(nn.Module):
    """Region crops -> tokens (MCLD's multi-focal conditioning, small).

    A conv stack shared by all regions (two stride-2 convs, GroupNorm, SiLU), adaptive average
    pooling to ``tokens_per_region`` cells, a linear projection to ``dim``, plus a learned region
    embedding and a learned per-cell position embedding.

    Args:
        channels: conv width.
        dim: token width (``cross_attention_dim``).
        tokens_per_region: tokens per region; a perfect square (1, 4, 9, ...).
        norm_num_groups: GroupNorm groups (must divide ``channels``).

    ``forward(crops)``: ``float [B, R, 3, hc, wc]`` in ``[-1, 1]`` (R regions) ->
    ``float [B, R * tokens_per_region, dim]`` (region-major).
    """

    def __init__(self, channels: int, dim: int, tokens_per_region: int, norm_num_groups: int):
        super().__init__()
        side = int(round(tokens_per_region**0.5))
        if side * side != tokens_per_region:
            raise ValueError(f"focal_tokens_per_region must be a perfect square, got {tokens_per_region}")
        self.side = side
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.GroupNorm(norm_num_groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(side),
        )
        self.proj = nn.Linear(channels, dim)
        self.region = nn.Parameter(torch.randn(NUM_REGIONS, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, side * side, dim) * 0.02)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        b, r = crops.shape[:2]
        f = self.net(crops.flatten(0, 1))  # [B*R, C, s, s]
        tok = self.proj(f.flatten(2).transpose(1, 2))  # [B*R, s*s, D]
        tok = tok.view(b, r, self.side * self.side, -1) + self.region[:r].to(tok.dtype) + self.pos.to(tok.dtype)
        return tok.flatten(1, 2)


class FlowRefiner(nn.Module):
    """Residual to a sampling grid from ``[warped features, target pose maps]`` (RePoseDM-style
    recurrent pose alignment, one per level).

    ``forward(x)``: ``float [B, C + 36, h, w]`` -> grid delta ``float [B, h, w, 2]`` in
    ``grid_sample`` normalised coordinates (``align_corners=False``; ``(x, y)`` order). The last
    conv is zero-initialised, so a fresh refiner returns 0 (the analytic flow is kept).
    """

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.out = _zero_module(nn.Conv2d(hidden, 2, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.conv(x))).permute(0, 2, 3, 1)


def _resize_grid(grid: torch.Tensor, hw: tuple[int, int], *, displacement: bool = False) -> torch.Tensor:
    """Resize a ``[B, h, w, 2]`` normalised grid to ``hw`` the way :func:`posegen.repose.warp.warp`
    does: its displacement from the identity is resized (bilinear, antialiased when shrinking) and
    added to the identity at ``hw``. ``displacement=True``: ``grid`` already is a displacement."""
    from .warp import identity_grid

    if tuple(grid.shape[1:3]) == tuple(hw):
        return grid
    b, h, w = grid.shape[:3]
    d = grid if displacement else grid - identity_grid(b, (h, w), grid.device, grid.dtype)
    shrink = hw[0] < h or hw[1] < w
    d = F.interpolate(d.permute(0, 3, 1, 2), size=hw, mode="bilinear", align_corners=False, antialias=shrink)
    d = d.permute(0, 2, 3, 1)
    return d if displacement else d + identity_grid(b, hw, grid.device, grid.dtype)


def _as_bool(mask, b: int, device, name: str) -> torch.Tensor:
    if mask is None:
        return torch.zeros(b, dtype=torch.bool, device=device)
    m = torch.as_tensor(mask, device=device)
    if m.ndim == 0:
        m = m.expand(b)
    if m.shape != (b,):
        raise ValueError(f"{name} must be a bool tensor [{b}], got shape {tuple(m.shape)}")
    return m.to(torch.bool)


class ReposeUNet(ModelMixin, ConfigMixin):
    """Pose-guided denoiser ``eps_theta(x_t, t | source, source_pose, target_pose)`` (see the module
    docstring for the conditioning paths and their sources).

    Args (all stored in ``config.json``):
        resolution: ``(height, width)`` of the images, pixels; divisible by
            ``2 ** (len(block_out_channels) - 1)``.
        block_out_channels: channels of each resolution level.
        layers_per_block: ResNet layers per level.
        attention_levels: one bool per level. Concatenation model: ``AttnDownBlock2D`` /
            ``AttnUpBlock2D`` (self-attention) where True. With cross-attention tokens
            (``texture_attention`` or ``focal_tokens``): ``CrossAttnDownBlock2D`` /
            ``CrossAttnUpBlock2D`` where True, and the texture tokens come from these levels.
            Otherwise ``DownBlock2D`` / ``UpBlock2D``; the up path mirrors the down path.
        norm_num_groups: GroupNorm groups; must divide every channel count.
        pose_sigma, limb_width, min_score: how pose maps are rendered for this model
            (:func:`~posegen.repose.render.render_pose`), and the joint presence threshold of the
            flow and the focal boxes; the pipeline reads them from here.
        texture_attention, pose_aligned, focal_tokens: the conditioning paths (module docstring).
        cross_attention_dim: token width of the cross-attention context.
        attention_head_dim: channels per attention head (self- and cross-attention).
        texture_channels: channels of the texture encoder's levels (None: ``block_out_channels``).
        focal_size: ``(height, width)`` of the region crops, pixels.
        focal_tokens_per_region: tokens per focal region (a perfect square).

    Raises:
        ValueError: mismatched ``attention_levels``/``block_out_channels``/``texture_channels``
            lengths, a resolution not divisible by the down-sampling factor, groups not dividing
            the channels, or a head dimension not dividing an attention level's channels.
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
        texture_attention: bool = False,
        pose_aligned: bool = False,
        focal_tokens: bool = False,
        cross_attention_dim: int = 64,
        attention_head_dim: int = 8,
        texture_channels: tuple[int, ...] | None = None,
        focal_size: tuple[int, int] = (16, 16),
        focal_tokens_per_region: int = 4,
    ):
        super().__init__()
        resolution = tuple(int(v) for v in resolution)
        block_out_channels = tuple(int(c) for c in block_out_channels)
        attention_levels = tuple(bool(a) for a in attention_levels)
        n_levels = len(block_out_channels)
        if len(attention_levels) != n_levels:
            raise ValueError(
                f"attention_levels needs one entry per block ({n_levels}), got {len(attention_levels)}"
            )
        f = 2 ** (n_levels - 1)
        if len(resolution) != 2 or resolution[0] % f or resolution[1] % f:
            raise ValueError(f"resolution {resolution} (height, width) must be divisible by {f}")
        tex_ch = block_out_channels if texture_channels is None else tuple(int(c) for c in texture_channels)
        if len(tex_ch) != n_levels:
            raise ValueError(f"texture_channels needs one entry per block ({n_levels}), got {len(tex_ch)}")
        bad = [c for c in block_out_channels + tex_ch if c % norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={norm_num_groups} must divide every block's channels, not {bad}")
        self.conditioned = bool(texture_attention or pose_aligned or focal_tokens)
        self.has_tokens = bool(texture_attention or focal_tokens)
        self.level_sizes = tuple((resolution[0] // 2**i, resolution[1] // 2**i) for i in range(n_levels))

        if not self.conditioned:
            # the first model, unchanged (old config.json files load as this)
            down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
            up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
            head_dim = attention_head_dim if all(c % attention_head_dim == 0 for c in block_out_channels) else None
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
            return

        hd = int(attention_head_dim)
        bad = [c for c, a in zip(block_out_channels, attention_levels) if a and c % hd]
        if self.has_tokens and block_out_channels[-1] % hd:
            bad.append(block_out_channels[-1])
        if bad:
            raise ValueError(f"attention_head_dim={hd} must divide the attention levels' channels, not {bad}")
        if self.has_tokens:
            attn_type = ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D")
            mid = "UNetMidBlock2DCrossAttn"
            # UNet2DConditionModel's ``attention_head_dim`` is the number of heads for
            # cross-attention blocks (diffusers' historical naming, issue #2011)
            heads = tuple(max(1, c // hd) for c in block_out_channels)
        else:
            attn_type = ("AttnDownBlock2D", "AttnUpBlock2D")
            mid = "UNetMidBlock2D"
            heads = (hd,) * n_levels  # ...and the head dimension for AttnDownBlock2D
        down = tuple(attn_type[0] if a else "DownBlock2D" for a in attention_levels)
        up = tuple(attn_type[1] if a else "UpBlock2D" for a in reversed(attention_levels))
        in_ch = IN_CHANNELS + (IMAGE_CHANNELS + 1 if pose_aligned else 0)
        self.unet = UNet2DConditionModel(
            sample_size=resolution,
            in_channels=in_ch,
            out_channels=IMAGE_CHANNELS,
            down_block_types=down,
            up_block_types=up,
            mid_block_type=mid,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=int(cross_attention_dim),
            attention_head_dim=heads,
        )
        if texture_attention or pose_aligned:
            self.texture_encoder = TextureEncoder(IMAGE_CHANNELS + POSE_CHANNELS, tex_ch, norm_num_groups)
        if self.has_tokens:
            self.null_context = nn.Parameter(torch.randn(1, 1, int(cross_attention_dim)) * 0.02)
        if texture_attention:
            lv = [i for i, a in enumerate(attention_levels) if a] or [n_levels - 1]
            self.token_levels = tuple(lv)
            self.texture_tokens = TextureTokens(
                tuple(tex_ch[i] for i in lv), tuple(self.level_sizes[i] for i in lv), int(cross_attention_dim)
            )
        if focal_tokens:
            self.focal_encoder = FocalEncoder(
                tex_ch[0], int(cross_attention_dim), int(focal_tokens_per_region), norm_num_groups
            )
        if pose_aligned:
            self.refiners = nn.ModuleList(FlowRefiner(c + POSE_CHANNELS, c) for c in tex_ch)
            # one zero conv per skip connection of the down path (ControlNet order):
            # conv_in, then per level layers_per_block resnets (+ the downsampler but the last)
            spec = [(block_out_channels[0], 0)]
            for i, c in enumerate(block_out_channels):
                spec += [(c, i)] * layers_per_block
                if i < n_levels - 1:
                    spec.append((c, i + 1))
            self.residual_levels = tuple(lvl for _, lvl in spec)
            self.residual_convs = nn.ModuleList(
                _zero_module(nn.Conv2d(tex_ch[lvl], c, 1)) for c, lvl in spec
            )
            self.mid_conv = _zero_module(nn.Conv2d(tex_ch[-1], block_out_channels[-1], 1))

    @property
    def resolution(self) -> tuple[int, int]:
        """Model ``(height, width)`` in pixels."""
        return tuple(int(v) for v in self.config.resolution)

    @property
    def needs_keypoints(self) -> bool:
        """True when ``forward`` needs ``source_keypoints``/``target_keypoints`` (pose-aligned or
        focal conditioning)."""
        return bool(self.config.pose_aligned or self.config.focal_tokens)

    @classmethod
    def from_config_recipe(cls, model_cfg, *, min_score: float = 0.5) -> "ReposeUNet":
        """A freshly initialised model from a recipe's :class:`~posegen.recipe.ModelConfig`.

        Args:
            model_cfg: the recipe's ``model`` section.
            min_score: joint presence threshold for pose rendering (the recipe's ``pose.min_score``).
        """
        cond = getattr(model_cfg, "conditioning", None)
        tex = getattr(model_cfg, "texture_channels", None)
        return cls(
            resolution=tuple(model_cfg.resolution),
            block_out_channels=tuple(model_cfg.block_out_channels),
            layers_per_block=model_cfg.layers_per_block,
            attention_levels=tuple(model_cfg.attention_levels),
            norm_num_groups=model_cfg.norm_num_groups,
            pose_sigma=float(model_cfg.pose_sigma),
            limb_width=float(model_cfg.limb_width),
            min_score=float(min_score),
            texture_attention=bool(getattr(cond, "texture_attention", False)),
            pose_aligned=bool(getattr(cond, "pose_aligned", False)),
            focal_tokens=bool(getattr(cond, "focal_tokens", False)),
            cross_attention_dim=int(getattr(model_cfg, "cross_attention_dim", 64)),
            attention_head_dim=int(getattr(model_cfg, "attention_head_dim", 8)),
            texture_channels=None if tex is None else tuple(tex),
            focal_size=tuple(getattr(model_cfg, "focal_size", (16, 16))),
            focal_tokens_per_region=int(getattr(model_cfg, "focal_tokens_per_region", 4)),
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

    # ------------------------------------------------------------------------------ conditioning

    def _context(self, feats, source, source_kp, keep_app):
        """Cross-attention context ``[B, N, D]`` and its mask ``[B, N]`` (1 keep, 0 masked)."""
        b = source.shape[0]
        dtype = source.dtype
        ctx = [self.null_context.to(dtype).expand(b, -1, -1)]
        mask = [torch.ones(b, 1, device=source.device, dtype=dtype)]
        if self.config.texture_attention:
            tok = self.texture_tokens([feats[i] for i in self.token_levels])
            tok = torch.where(keep_app[:, None, None], tok, self.texture_tokens.null().to(dtype))
            ctx.append(tok)
            mask.append(torch.ones(tok.shape[:2], device=source.device, dtype=dtype))
        if self.config.focal_tokens:
            from .focal import crop_regions, focal_boxes

            h, w = self.resolution
            boxes, valid = focal_boxes(source_kp, (w, h), min_score=float(self.config.min_score))
            boxes = torch.as_tensor(boxes, device=source.device, dtype=torch.float32)
            valid = torch.as_tensor(valid, device=source.device, dtype=torch.bool)
            crops = crop_regions(source, boxes, valid, out_hw=tuple(self.config.focal_size))
            tok = self.focal_encoder(crops.to(dtype))  # [B, R*n, D]
            n = tok.shape[1] // NUM_REGIONS
            keep = (valid & keep_app[:, None]).repeat_interleave(n, dim=1)  # [B, R*n]
            ctx.append(torch.where(keep[..., None], tok, torch.zeros_like(tok)))
            mask.append(keep.to(dtype))
        return torch.cat(ctx, dim=1), torch.cat(mask, dim=1)

    def compute_flow(self, source_keypoints: torch.Tensor, target_keypoints: torch.Tensor):
        """The analytic target->source flow :func:`posegen.repose.warp.limb_flow` at the model
        resolution, with this model's ``min_score``.

        Args:
            source_keypoints, target_keypoints: ``float32 [B, 17, 3]`` model-frame pixels.

        Returns:
            ``(grid float32 [B, h, w, 2], weight float32 [B, 1, h, w])`` on the keypoints' device.
        """
        from .warp import limb_flow

        return limb_flow(
            source_keypoints.float(), target_keypoints.float(), self.resolution, min_score=float(self.config.min_score)
        )

    def _aligned(self, feats, source, target_pose, source_kp, target_kp, keep_pose, keep_app, flow=None):
        """Warped source ``[B, 3, h, w]``, flow weight ``[B, 1, h, w]`` and the pose-aligned
        features of every level (coarse-to-fine refined)."""
        from .warp import identity_grid, warp

        b = source.shape[0]
        h, w = self.resolution
        dtype = source.dtype
        grid, weight = self.compute_flow(source_kp, target_kp) if flow is None else flow
        if tuple(grid.shape) != (b, h, w, 2) or tuple(weight.shape) != (b, 1, h, w):
            raise ValueError(
                f"flow must be (grid [{b}, {h}, {w}, 2], weight [{b}, 1, {h}, {w}]), "
                f"got {tuple(grid.shape)}, {tuple(weight.shape)}"
            )
        grid = torch.as_tensor(grid, device=source.device, dtype=torch.float32)
        weight = torch.as_tensor(weight, device=source.device, dtype=torch.float32)
        ident = identity_grid(b, (h, w), source.device, torch.float32)
        grid = torch.where(keep_pose[:, None, None, None], grid, ident)
        weight = weight * keep_pose[:, None, None, None].float()
        warped_source = warp(source, grid, weight)
        kp = keep_pose[:, None, None, None].to(dtype)
        ka = keep_app[:, None, None, None].to(dtype)
        aligned: list[torch.Tensor | None] = [None] * len(feats)
        delta = None  # accumulated grid residual (a displacement), coarse to fine
        for lvl in reversed(range(len(feats))):
            f = feats[lvl]
            hw = tuple(f.shape[-2:])
            base = _resize_grid(grid, hw)
            delta = torch.zeros_like(base) if delta is None else _resize_grid(delta, hw, displacement=True)
            wf = warp(f, base + delta, weight)
            tp = target_pose if hw == tuple(target_pose.shape[-2:]) else F.interpolate(target_pose, size=hw, mode="area")
            delta = delta + self.refiners[lvl](torch.cat([wf, tp], dim=1)).float()
            aligned[lvl] = warp(f, base + delta, weight) * kp * ka
        weight = weight.to(dtype)
        return warped_source, weight, aligned

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        source: torch.Tensor,
        source_pose: torch.Tensor,
        target_pose: torch.Tensor,
        *,
        source_keypoints: torch.Tensor | None = None,
        target_keypoints: torch.Tensor | None = None,
        drop_pose: torch.Tensor | None = None,
        drop_appearance: torch.Tensor | None = None,
        flow: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predict the noise (or ``v``, or ``x0``) of the noisy target.

        Args:
            sample: noisy target ``x_t``, ``float [B, 3, h, w]``.
            timestep: ``[B]`` or a scalar (int / 0-d tensor), in ``[0, num_train_timesteps)``.
            source: source image ``float [B, 3, h, w]`` in ``[-1, 1]``.
            source_pose: ``float [B, 36, h, w]`` in ``[0, 1]`` (source keypoints, model frame).
            target_pose: ``float [B, 36, h, w]`` in ``[0, 1]`` (target keypoints, model frame).
            source_keypoints, target_keypoints: ``float32 [B, 17, 3]`` COCO-17 ``(x, y, score)`` in
                pixels of the model frame (``w x h``, x right, y down); required when
                :attr:`needs_keypoints`, ignored otherwise.
            drop_pose, drop_appearance: bool ``[B]`` (or None = keep all): condition dropout for
                training and classifier-free guidance (module docstring).
            flow: optional precomputed :meth:`compute_flow` of these keypoints ``(grid [B, h, w, 2],
                weight [B, 1, h, w])`` (the pipeline computes it once per call instead of once per
                step); None = computed here. Ignored unless ``pose_aligned``.

        Returns:
            ``[B, 3, h, w]`` in the dtype of ``sample``: ``eps``, ``v`` or ``x0`` per the training recipe.

        Raises:
            ValueError: a batch/spatial/channel mismatch, or missing keypoints (messages name the inputs).
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
        if self.needs_keypoints:
            for name, kp in (("source_keypoints", source_keypoints), ("target_keypoints", target_keypoints)):
                if kp is None:
                    raise ValueError(
                        f"{name} is required by this model (pose_aligned={self.config.pose_aligned}, "
                        f"focal_tokens={self.config.focal_tokens}): pass [B, 17, 3] model-frame keypoints"
                    )
                if tuple(kp.shape) != (b, 17, 3):
                    raise ValueError(f"{name} must be [{b}, 17, 3], got {tuple(kp.shape)}")
        device = sample.device
        keep_pose = ~_as_bool(drop_pose, b, device, "drop_pose")
        keep_app = ~_as_bool(drop_appearance, b, device, "drop_appearance")
        dtype = self.unet.conv_in.weight.dtype
        kp4 = keep_pose[:, None, None, None].to(dtype)
        ka4 = keep_app[:, None, None, None].to(dtype)
        source = source.to(dtype) * ka4
        source_pose = source_pose.to(dtype) * kp4
        target_pose = target_pose.to(dtype) * kp4
        if not torch.is_tensor(timestep):
            timestep = torch.tensor(timestep, device=device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        timestep = timestep.to(device)
        x = [sample.to(dtype), source, source_pose, target_pose]
        if not self.conditioned:
            return self.unet(torch.cat(x, dim=1), timestep).sample.to(sample.dtype)

        feats = None
        if self.config.texture_attention or self.config.pose_aligned:
            feats = self.texture_encoder(torch.cat([source, source_pose], dim=1))
        ctx = mask = None
        if self.has_tokens:
            skp = None if source_keypoints is None else source_keypoints.to(device)
            ctx, mask = self._context(feats, source, skp, keep_app)
        extra: dict = {}
        if self.config.pose_aligned:
            warped, weight, aligned = self._aligned(
                feats, source, target_pose, source_keypoints.to(device), target_keypoints.to(device),
                keep_pose, keep_app, flow,
            )
            x += [warped * ka4, weight]
            extra["down_block_additional_residuals"] = tuple(
                conv(aligned[lvl]) for conv, lvl in zip(self.residual_convs, self.residual_levels)
            )
            extra["mid_block_additional_residual"] = self.mid_conv(aligned[-1])
        out = self.unet(
            torch.cat(x, dim=1), timestep, encoder_hidden_states=ctx, encoder_attention_mask=mask, **extra
        ).sample
        return out.to(sample.dtype)
