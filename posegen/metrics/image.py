"""Per-image reconstruction metrics, SSIM and PSNR, computed with torchmetrics.

Images are ``uint8`` RGB, ``[N, H, W, 3]`` (a batch) or ``[H, W, 3]`` (one image); both arguments
must have the same shape. They are converted to float in ``[0, 1]`` (``/ 255``) and compared with
``data_range = 1.0``. Scores are per image (never averaged over the batch).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

__all__ = ["ssim", "psnr"]


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"images must be uint8 RGB, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] or [H, W, 3] RGB, got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError("no images given")

    def to_t(x):
        return torch.from_numpy(np.array(x, copy=True)).permute(0, 3, 1, 2).to(torch.float32) / 255.0

    return to_t(a), to_t(b)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of each image pair.

    torchmetrics ``structural_similarity_index_measure`` with its defaults made explicit: a
    Gaussian window of 11 x 11 pixels, sigma 1.5, ``k1 = 0.01``, ``k2 = 0.03``, ``data_range = 1.0``
    on ``[0, 1]`` floats, computed per channel and averaged over channels and pixels (the window's
    border, 5 pixels each side, is excluded as torchmetrics does). Images need H, W >= 11.

    Args:
        a: ``uint8 [N, H, W, 3]`` or ``[H, W, 3]`` RGB.
        b: same shape and dtype.

    Returns:
        ``float32 [N]`` (``[1]`` for a single image), 1.0 for identical images.

    Raises:
        ValueError: dtype is not uint8, shapes differ or are not RGB images, or an image is
            smaller than the 11 x 11 window.
    """
    ta, tb = _pair(a, b)
    if min(ta.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11 x 11 pixels, got {tuple(ta.shape[-2:])}")
    out = structural_similarity_index_measure(
        ta, tb, gaussian_kernel=True, sigma=1.5, kernel_size=11, reduction="none", data_range=1.0, k1=0.01, k2=0.03
    )
    return out.reshape(-1).numpy().astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio of each image pair, in dB.

    torchmetrics ``peak_signal_noise_ratio`` with ``data_range = 1.0`` on ``[0, 1]`` floats, the
    mean squared error taken over each image's pixels and channels:
    ``10 * log10(1 / MSE)``.

    Args:
        a: ``uint8 [N, H, W, 3]`` or ``[H, W, 3]`` RGB.
        b: same shape and dtype.

    Returns:
        ``float32 [N]`` in dB; ``inf`` for identical images.

    Raises:
        ValueError: dtype is not uint8, or shapes differ or are not RGB images.
    """
    ta, tb = _pair(a, b)
    out = peak_signal_noise_ratio(ta, tb, data_range=1.0, reduction="none", dim=(1, 2, 3))
    out = out.reshape(-1).numpy().astype(np.float32)
    # torchmetrics gives +inf for MSE = 0 (log of a division by zero); make it exact regardless
    same = (ta == tb).flatten(1).all(dim=1).numpy()
    out[same] = np.inf
    return out
