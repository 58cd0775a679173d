"""A garment-colour similarity for fashion datasets, where a person re-ID model does not tell items apart.

:class:`ColourHistogramEmbedder` has the interface of :class:`posegen.metrics.ReidEmbedder`
(``embed(images) -> float32 [N, D]``, L2-normalised rows), so the filter's identity checks use it
unchanged: the dot product of two embeddings is the **Bhattacharyya coefficient** of the two
images' foreground colour histograms (0 = no colour in common, 1 = the same colour distribution).

Foreground: studio fashion photos have a plain background; a pixel is background when its RGB
colour lies within ``background_tol`` (0..255 Euclidean) of the median colour of the image's
one-pixel border; the foreground is then eroded by one pixel (edge pixels blend garment and
background). When less than 5 % of the pixels are foreground, every pixel counts. Colours are
binned in HSV (``bins`` = hue, saturation, value bins; hue is circular), so a change of lighting
moves mass along V rather than across hues.

Measured on the 179 real DeepFashion In-shop photos of ``../shared/data/deepfashion-samples``
(``benchmarks/fashion_identity.py``, results in ``benchmarks/results/fashion_identity.md``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["ColourHistogramEmbedder", "COLOUR_HISTOGRAM"]

#: The value of ``filter.reid_weights`` (or ``--reid-weights``) that selects this embedder.
COLOUR_HISTOGRAM = "colour-histogram"


class ColourHistogramEmbedder:
    """Foreground HSV colour histograms as unit vectors (see the module docstring).

    Args:
        bins: ``(hue, saturation, value)`` bin counts; ``D = prod(bins)``.
        background_tol: RGB distance (0..255) to the border's median colour under which a pixel
            is background.
        size: ``(height, width)`` the images are resized to first (bilinear), so that every image
            weighs its pixels alike.

    Attributes:
        dim: the embedding size ``D``.
        path: ``"colour-histogram"`` (what selects it; stands where a re-ID embedder has its file).
    """

    batch_size = None

    def __init__(self, bins: tuple[int, int, int] = (16, 4, 8), background_tol: float = 30.0, size: tuple[int, int] = (128, 88)):
        if len(bins) != 3 or min(bins) < 1:
            raise ValueError(f"bins must be three positive counts (hue, saturation, value), got {bins}")
        self.bins = tuple(int(b) for b in bins)
        self.background_tol = float(background_tol)
        self.size = (int(size[0]), int(size[1]))
        self.dim = int(np.prod(self.bins))
        self.path = COLOUR_HISTOGRAM

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """``bool [h, w]`` foreground mask of ``image`` (``uint8 [H, W, 3]`` RGB) at :attr:`size`."""
        rgb = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(self.size[::-1], Image.BILINEAR), np.float32)
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        bg = np.median(border, axis=0)
        fg = np.linalg.norm(rgb - bg, axis=-1) > self.background_tol
        inner = fg.copy()  # erode by one pixel: edge pixels blend garment and background colours
        inner[1:] &= fg[:-1]
        inner[:-1] &= fg[1:]
        inner[:, 1:] &= fg[:, :-1]
        inner[:, :-1] &= fg[:, 1:]
        return inner if inner.mean() >= 0.05 else np.ones_like(fg)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``float32 [N, D]`` L2-normalised square roots of the foreground HSV histograms.

        Args:
            images: ``uint8 [H, W, 3]`` RGB images of any sizes (not modified).

        Raises:
            ValueError: an image is not ``uint8 [H, W, 3]``.
        """
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        hb, sb, vb = self.bins
        for i, im in enumerate(images):
            a = np.asarray(im)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"images must be uint8 [H, W, 3] RGB, got {a.dtype} {a.shape}")
            small = Image.fromarray(a).resize(self.size[::-1], Image.BILINEAR)
            hsv = np.asarray(small.convert("HSV"), dtype=np.int64)
            fg = self.foreground(a)
            h = np.minimum(hsv[..., 0] * hb // 256, hb - 1)
            s = np.minimum(hsv[..., 1] * sb // 256, sb - 1)
            v = np.minimum(hsv[..., 2] * vb // 256, vb - 1)
            idx = ((h * sb + s) * vb + v)[fg]
            hist = np.bincount(idx, minlength=self.dim).astype(np.float64)
            hist /= max(hist.sum(), 1.0)
            out[i] = np.sqrt(hist)  # unit L2 norm: sum of the histogram is 1
        return out
