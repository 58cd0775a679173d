"""FID and LPIPS, computed only with weight files the user gives (never downloaded).

Both metrics need pretrained networks that neither posegen nor its dependencies' wheels ship in
full, and posegen never downloads anything. Pass local files:

- :func:`fid`: the Inception-v3 weights in torch-fidelity's ``FeatureExtractorInceptionV3`` format,
  the file torch-fidelity itself fetches, ``weights-inception-2015-12-05-6726825d.pth`` (a port of
  the TensorFlow FID Inception graph; from torch-fidelity's GitHub release v0.2.0).
- :func:`lpips`: either the torchvision ImageNet backbone (``alexnet-owt-7be5be79.pth`` or
  ``vgg16-397923af.pth``, as torchvision saves them in its hub cache), in which case the LPIPS v0.1
  linear layers come from the copy bundled inside the torchmetrics wheel; or one file with the whole
  LPIPS state dict (backbone + linear layers, the keys of torchmetrics' LPIPS module:
  ``net.slice1.0.weight`` ..., ``lin0.model.1.weight`` ...). ``.pth`` and ``.safetensors`` files work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

__all__ = ["fid", "lpips", "FID_WEIGHTS_NAME", "LPIPS_BACKBONE_FILES"]

#: The file :func:`fid` needs (torch-fidelity's Inception-v3 for FID).
FID_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
#: torchvision's ImageNet backbone files :func:`lpips` accepts, by ``net``.
LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def _images(images, name: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    out = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{name}[{i}]: expected uint8 [H, W, 3] RGB, got {img.dtype} {img.shape}")
        out.append(img)
    return out


def _batches(images: list[np.ndarray], size: int) -> Iterable[torch.Tensor]:
    """Consecutive same-sized images, at most ``size`` at a time, as uint8 ``[B, 3, H, W]``."""
    i = 0
    while i < len(images):
        j = i + 1
        while j < len(images) and j - i < size and images[j].shape == images[i].shape:
            j += 1
        yield torch.from_numpy(np.stack(images[i:j])).permute(0, 3, 1, 2).contiguous()
        i = j


def fid(
    real_images: Sequence[np.ndarray] | np.ndarray,
    fake_images: Sequence[np.ndarray] | np.ndarray,
    *,
    inception_weights: str | os.PathLike | None,
    batch_size: int = 32,
) -> float:
    """Fréchet Inception distance (Heusel et al. 2017) between two sets of images.

    torchmetrics ``FrechetInceptionDistance`` (2048-d pool features of torch-fidelity's
    ``inception-v3-compat`` network) with ``feature_extractor_weights_path`` = the local file, and
    ``antialias=False`` so images are resized to 299 x 299 like the original TensorFlow FID code
    (torch-fidelity's default). Small sets give a biased, noisy value: compare FIDs only between
    sets of equal size (thousands of images for publishable numbers).

    Args:
        real_images: uint8 ``[H, W, 3]`` RGB images (a list, sizes may differ, or ``[N, H, W, 3]``), N >= 2.
        fake_images: the same for the generated set, N >= 2.
        inception_weights: local path of :data:`FID_WEIGHTS_NAME`.
        batch_size: images per forward pass.

    Returns:
        The FID (>= 0, ~0 for identical sets).

    Raises:
        FileNotFoundError: ``inception_weights`` is None or not a file (the message says which file
            to pass; nothing is downloaded).
        ValueError: an image is not uint8 RGB or a set has fewer than 2 images.
    """
    path = _weights_file(
        inception_weights,
        f"FID needs local Inception-v3 weights: pass inception_weights=<path to {FID_WEIGHTS_NAME}> "
        "(torch-fidelity's FeatureExtractorInceptionV3 weights, GitHub release v0.2.0); posegen never downloads them",
        f"FID Inception-v3 weights not found: {{path}} (expected the file {FID_WEIGHTS_NAME})",
    )
    real = _images(real_images, "real_images")
    fake = _images(fake_images, "fake_images")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(real)} real and {len(fake)} fake")
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path), antialias=False)
    with torch.no_grad():
        for batch in _batches(real, batch_size):
            metric.update(batch, real=True)
        for batch in _batches(fake, batch_size):
            metric.update(batch, real=False)
        return float(metric.compute())


def _weights_file(weights: str | os.PathLike | None, if_none: str, if_missing: str) -> Path:
    """The local weights file as a Path; ``FileNotFoundError(if_none)`` for None, and
    ``FileNotFoundError(if_missing.format(path=...))`` when it is not a file (never downloads)."""
    if weights is None:
        raise FileNotFoundError(if_none)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(if_missing.format(path=path))
    return path


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def _lpips_model(weights: str | os.PathLike | None, net: str):
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
    path = _weights_file(
        weights,
        f"LPIPS needs local weights: pass weights=<path to torchvision's {LPIPS_BACKBONE_FILES[net]}> "
        "or a full LPIPS state dict; posegen never downloads them",
        "LPIPS weights not found: {path}",
    )
    # torchmetrics' own LPIPS module; pnet_rand=True builds the torchvision backbone with
    # weights=None (no download) and pretrained=False skips its lenient (strict=False) loading:
    # every weight is then loaded here, strictly, from the user's file.
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    model = _NoTrainLpips(pretrained=False, net=net, pnet_rand=True)
    target = model.state_dict()
    given = _load_state_dict(path)
    full: dict[str, torch.Tensor] = {}
    if any(k.startswith("features.") for k in given):  # a torchvision backbone
        where = {}
        for sname, sl in model.net.named_children():
            for idx, _ in sl.named_children():
                where[idx] = sname
        for k, v in given.items():
            if k.startswith("features."):
                idx, rest = k[len("features.") :].split(".", 1)
                if idx in where:
                    full[f"net.{where[idx]}.{idx}.{rest}"] = v
        import torchmetrics.functional.image.lpips as tm_lpips

        lin_file = Path(tm_lpips.__file__).parent / "lpips_models" / f"{net}.pth"
        full.update(torch.load(str(lin_file), map_location="cpu", weights_only=True))
    else:
        full.update(given)
    for k in list(full):  # lin{k} and lins.{k} are the same modules
        if k.startswith("lin") and not k.startswith("lins."):
            full[f"lins.{k[3:]}"] = full[k]
    missing = [k for k in target if k not in full and not k.startswith("scaling_layer.")]
    if missing:
        raise ValueError(
            f"{path}: not LPIPS-{net} weights; missing {len(missing)} tensors, e.g. {missing[:3]} "
            f"(pass torchvision's {LPIPS_BACKBONE_FILES[net]} or a full LPIPS state dict)"
        )
    for k, v in target.items():
        if k.startswith("scaling_layer."):
            full[k] = v
        elif tuple(full[k].shape) != tuple(v.shape):
            raise ValueError(f"{path}: tensor {k} has shape {tuple(full[k].shape)}, LPIPS-{net} needs {tuple(v.shape)}")
    model.load_state_dict({k: full[k] for k in target}, strict=True)
    return model.eval()


def lpips(
    a: np.ndarray,
    b: np.ndarray,
    *,
    weights: str | os.PathLike | None,
    net: str = "alex",
    batch_size: int = 32,
) -> np.ndarray:
    """Learned perceptual image patch similarity (Zhang et al. 2018, LPIPS v0.1) of each image pair.

    torchmetrics' LPIPS network (the module behind ``LearnedPerceptualImagePatchSimilarity``) built
    without any download and loaded strictly from ``weights`` (see the module docstring for the
    accepted files). Images are scaled to ``[-1, 1]`` as LPIPS expects; lower = more similar.

    Args:
        a: uint8 RGB ``[N, H, W, 3]`` or ``[H, W, 3]``.
        b: same shape (H, W >= 32 for AlexNet's strides).
        weights: local path, see above.
        net: ``"alex"`` (the LPIPS paper's default) or ``"vgg"``.
        batch_size: pairs per forward pass.

    Returns:
        ``float32 [N]``, 0 for identical images.

    Raises:
        FileNotFoundError: ``weights`` is None or not a file.
        ValueError: unknown ``net``, a file that does not hold the needed tensors, or images that
            are not uint8 RGB of equal shape, at least 32 x 32.
    """
    model = _lpips_model(weights, net)
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != np.uint8 or b.dtype != np.uint8 or a.shape != b.shape:
        raise ValueError(f"images must be uint8 RGB of equal shape, got {a.dtype} {a.shape} and {b.dtype} {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] or [H, W, 3] RGB, got {a.shape}")
    if min(a.shape[1:3]) < 32:
        raise ValueError(f"LPIPS needs images of at least 32 x 32 pixels, got {a.shape[1:3]}")
    out = []
    with torch.no_grad():
        for i in range(0, len(a), batch_size):
            ta = torch.from_numpy(np.ascontiguousarray(a[i : i + batch_size])).permute(0, 3, 1, 2).float() / 127.5 - 1
            tb = torch.from_numpy(np.ascontiguousarray(b[i : i + batch_size])).permute(0, 3, 1, 2).float() / 127.5 - 1
            out.append(model(ta, tb).reshape(-1))
    return torch.cat(out).numpy().astype(np.float32)
