"""TAEF2, the tiny autoencoder distilled from the FLUX.2 VAE, as a diffusers-style model.

posegen's default re-posing model works in TAEF2's latent space: an RGB image ``[3, H, W]`` in
``0..1`` becomes a latent ``[32, H/8, W/8]`` (``[32, 32, 16]`` at posegen's 256x128 working size)
and back. The architecture follows ``taesd.py`` of madebyollin/taesd (MIT, commit 5cccb12; the
weights in ``../shared/weights/taef2/`` come from there):

- a ``Block`` is ``relu(conv3(relu(conv3(relu(conv3(x))))) + skip(x))`` with 64 channels; in the
  blocks at 1/8 resolution (the encoder's last stage, the decoder's first) a global branch is added
  first, ``x + conv1x1(relu(GroupNorm(4, 256)(conv1x1(x))))`` (64 -> 256 -> 64, no bias) — the
  FLUX.2 variant that diffusers' ``AutoencoderTiny`` cannot express (its blocks have no such
  branch), hence this module;
- encoder: conv3(3->64), Block, then three times [conv3 stride 2 (no bias), 3 Blocks],
  conv3(64->32);
- decoder: soft clamp ``tanh(z / 3) * 3``, conv3(32->64), ReLU, 3 Blocks, then three times
  [nearest upsample x2, conv3 (no bias), 3 Blocks (1 in the last stage)], conv3(64->3).

Precision: float32 by default; ``precision="bfloat16"`` (or ``"auto"`` on a CPU with native bfloat16
arithmetic, AVX512-BF16 or AMX, :func:`native_bf16`) runs the convolutions under
``torch.autocast("cpu", torch.bfloat16)``: on the AMD EPYC (Zen 4) of the development machine,
about 2.1x faster for both encoder and decoder, decoded images within 0.4 grey levels on average
(``benchmarks/autoencoder_precision.py``). Training keeps float32 (its latent cache is keyed by the
weights alone); the default model's sampling uses ``"auto"``.

Weights load with a **strict** state-dict load from the two ``torch.save`` files
(``taef2_encoder.pth``, ``taef2_decoder.pth``, keys of an ``nn.Sequential``); a missing file is a
``FileNotFoundError`` naming it, a file with other keys or shapes a ``ValueError``. Nothing is
downloaded. Measured on 100 CUHK03 val crops at 256x128: reconstruction SSIM 0.946, PSNR 30.3 dB
(``../shared/weights/README.md``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .._io import shared_path

__all__ = ["TAEF2", "load_taef2", "default_taef2_dir", "native_bf16", "LATENT_CHANNELS", "LATENT_SCALE", "PRECISIONS"]

#: The autoencoder precisions: ``"auto"`` = bfloat16 on a CPU with native bfloat16 arithmetic
#: (:func:`native_bf16`), else float32.
PRECISIONS = ("float32", "bfloat16", "auto")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), where oneDNN's
    bfloat16 convolutions are faster than float32 ones; elsewhere they are emulated, and slower."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)())

#: Channels of a TAEF2 latent.
LATENT_CHANNELS = 32
#: Spatial downsampling factor of the encoder.
LATENT_SCALE = 8
_WIDTH = 64
_ENCODER_FILE = "taef2_encoder.pth"
_DECODER_FILE = "taef2_decoder.pth"


def _conv(c_in: int, c_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, **kw)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, global_branch: bool = False):
        super().__init__()
        # FLUX.2 global branch: x + conv1x1(relu(GroupNorm(4, 4c)(conv1x1(x)))), no biases
        self.pool = (
            nn.Sequential(
                nn.Conv2d(c_in, 4 * c_in, 1, bias=False), nn.GroupNorm(4, 4 * c_in), nn.ReLU(),
                nn.Conv2d(4 * c_in, c_in, 1, bias=False),
            )
            if global_branch
            else None
        )
        self.conv = nn.Sequential(_conv(c_in, c_out), nn.ReLU(), _conv(c_out, c_out), nn.ReLU(), _conv(c_out, c_out))
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class _Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3.0) * 3.0


def _encoder() -> nn.Sequential:
    c = _WIDTH
    layers: list[nn.Module] = [_conv(3, c), _Block(c, c)]
    for stage in range(3):
        last = stage == 2
        layers += [_conv(c, c, stride=2, bias=False)] + [_Block(c, c, global_branch=last) for _ in range(3)]
    layers.append(_conv(c, LATENT_CHANNELS))
    return nn.Sequential(*layers)


def _decoder() -> nn.Sequential:
    c = _WIDTH
    layers: list[nn.Module] = [_Clamp(), _conv(LATENT_CHANNELS, c), nn.ReLU()]
    layers += [_Block(c, c, global_branch=True) for _ in range(3)]
    for stage in range(3):
        n = 1 if stage == 2 else 3
        layers += [nn.Upsample(scale_factor=2), _conv(c, c, bias=False)] + [_Block(c, c) for _ in range(n)]
    layers.append(_conv(c, 3))
    return nn.Sequential(*layers)


class TAEF2(ModelMixin, ConfigMixin):
    """TAEF2 encoder + decoder (``ModelMixin``: ``save_pretrained`` / ``from_pretrained`` work).

    :meth:`encode`: ``float [N, 3, H, W]`` RGB in ``0..1`` (``H``, ``W`` multiples of 8) ->
    ``[N, 32, H/8, W/8]`` latents (std about 0.9, range about +-7; no extra scaling).
    :meth:`decode`: latents -> ``[N, 3, H, W]`` RGB clamped to ``0..1``.
    Use :func:`load_taef2` to build it from the original ``.pth`` files.
    """

    @register_to_config
    def __init__(self, latent_channels: int = LATENT_CHANNELS, scale_factor: int = LATENT_SCALE):
        super().__init__()
        if latent_channels != LATENT_CHANNELS or scale_factor != LATENT_SCALE:
            raise ValueError(f"TAEF2 has {LATENT_CHANNELS} latent channels and scale {LATENT_SCALE}")
        self.encoder = _encoder()
        self.decoder = _decoder()
        self.precision = "float32"  # not part of the config: how this process runs the weights (set_precision)
        # NHWC weights and activations: oneDNN's CPU convolutions run about 15 % faster on them
        # (``benchmarks/default_model_speed.py``); the results are the same up to float rounding
        self.to(memory_format=torch.channels_last)

    def set_precision(self, precision: str) -> "TAEF2":
        """Run the convolutions in ``precision`` (one of :data:`PRECISIONS`; ``"auto"`` resolves
        now, with :func:`native_bf16`). bfloat16 applies on a CPU only (``torch.autocast``); the
        weights and the returned tensors stay float32. Returns ``self``.

        Raises:
            ValueError: an unknown precision.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"autoencoder precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = ("bfloat16" if native_bf16() else "float32") if precision == "auto" else precision
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` RGB float in 0..1 -> latents ``[N, 32, H/8, W/8]``; on a CPU one image at a
        time (:meth:`_per_image`).

        Raises:
            ValueError: not 4-D with 3 channels, or ``H``/``W`` not multiples of 8.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        if images.shape[-1] % LATENT_SCALE or images.shape[-2] % LATENT_SCALE:
            raise ValueError(f"image height and width must be multiples of {LATENT_SCALE}, got {tuple(images.shape[-2:])}")
        return self._per_image(self.encoder, images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[N, 32, h, w]`` -> RGB ``[N, 3, 8h, 8w]`` float in ``0..1`` (clamped); on a CPU
        one image at a time (:meth:`_per_image`).

        Raises:
            ValueError: not 4-D with 32 channels.
        """
        if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"latents must be [N, {LATENT_CHANNELS}, h, w], got {tuple(latents.shape)}")
        return self._per_image(self.decoder, latents).clamp(0.0, 1.0)

    def _per_image(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``net`` on NHWC ``x``; on a CPU one image at a time: the 256x128x64 float activations of one
        image (8 MB) stay in the cache, which makes the decoder 5-7 % faster per image than on
        batches of 16 (``benchmarks/default_model_speed.py``; the encoder gains about as much); a
        GPU gets the whole batch. The results equal the batched ones up to float rounding. With
        :attr:`precision` bfloat16, under ``torch.autocast`` on the CPU; float32 out."""
        x = x.contiguous(memory_format=torch.channels_last)
        if x.device.type != "cpu":
            return net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            return torch.cat([net(x[i : i + 1]) for i in range(len(x))]).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(images))``."""
        return self.decode(self.encode(images))


def default_taef2_dir() -> Path:
    """Where the TAEF2 ``.pth`` files are looked for when no path is given:
    ``$POSEGEN_TAEF2_DIR``, else ``../shared/weights/taef2`` (:func:`posegen._io.shared_path`)."""
    return shared_path("weights/taef2", "POSEGEN_TAEF2_DIR")


def _load_sequential(module: nn.Sequential, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"TAEF2 weights not found: {path} (set POSEGEN_TAEF2_DIR or pass the folder holding "
            f"{_ENCODER_FILE} and {_DECODER_FILE}; nothing is downloaded)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read TAEF2 weights {path}: {exc}") from exc
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a TAEF2 state dict: {str(exc).splitlines()[0]}") from exc


def load_taef2(folder: str | os.PathLike | None = None, precision: str = "float32") -> TAEF2:
    """Build :class:`TAEF2` from ``folder/taef2_encoder.pth`` and ``folder/taef2_decoder.pth``.

    Args:
        folder: the folder holding both files; None = :func:`default_taef2_dir`.
        precision: how the convolutions run (:meth:`TAEF2.set_precision`, :data:`PRECISIONS`).

    Returns:
        The model in eval mode, float32 weights, on the CPU, with gradients off.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
        ValueError: a file is unreadable or its keys/shapes differ from TAEF2's (strict load); an
            unknown precision.
    """
    folder = Path(folder) if folder is not None else default_taef2_dir()
    model = TAEF2()
    _load_sequential(model.encoder, folder / _ENCODER_FILE)
    _load_sequential(model.decoder, folder / _DECODER_FILE)
    model.eval().requires_grad_(False)
    return model.set_precision(precision)
