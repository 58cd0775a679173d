"""Quality metrics: SSIM/PSNR (torchmetrics), OKS/PCK, identity similarity, optional FID/LPIPS.

- :mod:`.image`: :func:`ssim`, :func:`psnr` per image pair (uint8 RGB).
- :mod:`.pose`: :func:`oks`, :func:`oks_batch`, :func:`pck` on COCO-17 keypoints in pixels.
- :mod:`.identity`: :class:`ReidEmbedder` (local ONNX re-ID model) and :func:`cosine`.
- :mod:`.distribution`: :func:`fid`, :func:`lpips`, only with weight files the user gives.
"""

from .distribution import fid, lpips
from .identity import ReidEmbedder, cosine
from .image import psnr, ssim
from .pose import oks, oks_batch, pck

__all__ = ["ssim", "psnr", "oks", "oks_batch", "pck", "ReidEmbedder", "cosine", "fid", "lpips"]
