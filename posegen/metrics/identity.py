"""Identity similarity: a person re-ID embedder loaded from a local ONNX file, and cosine similarity.

The embedder is meant for torchreid-style models exported to ONNX, e.g. OSNet x0.25 trained on
MSMT17 (``../shared/weights/osnet/osnet_x0_25_msmt17.onnx``: float ``[N, 3, 256, 128]``
ImageNet-normalised RGB -> ``[N, 512]``). It runs with onnxruntime (CPU provider unless told
otherwise) and never downloads anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ReidEmbedder", "cosine", "IMAGENET_MEAN", "IMAGENET_STD"]

#: ImageNet channel mean and std (RGB, on a 0..1 scale), torchreid's default normalisation.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _external_data_files(path: Path) -> list[Path]:
    """Files holding the graph's external tensors (ONNX external data), resolved beside ``path``.

    Uses the ``onnx`` package when it is installed; without it returns ``[]`` and a missing file
    is reported from onnxruntime's error instead.

    Raises:
        ValueError: ``path`` is not a readable ONNX model.
    """
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    except ImportError:  # pragma: no cover - onnx is only a test extra
        return []
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot load the ONNX model {path} (not a valid ONNX file?): {first}") from exc
    names: list[str] = []
    for t in model.graph.initializer:
        if uses_external_data(t):
            loc = ExternalDataInfo(t).location
            if loc and loc not in names:
                names.append(loc)
    return [path.parent / n for n in names]


class ReidEmbedder:
    """Person re-ID embeddings from a local ONNX model (onnxruntime).

    Preprocessing, as torchreid does at test time: each ``uint8 [H, W, 3]`` RGB image (any size)
    is resized to ``input_hw`` (height, width; 256 x 128 by default) with bilinear interpolation
    (``torch.nn.functional.interpolate``, ``align_corners=False``, antialiased when shrinking),
    scaled to ``[0, 1]`` and normalised with the ImageNet mean and std, giving float32
    ``[N, 3, H, W]``. The model's output ``[N, D]`` is L2-normalised, so the dot product of two
    embeddings is their cosine similarity.

    Args:
        path: the ``.onnx`` file. External tensor data (e.g. ``model.onnx.data``) must lie beside it
            under the name the graph records.
        providers: onnxruntime execution providers, default ``["CPUExecutionProvider"]``.
        input_hw: ``(height, width)`` the images are resized to; must match the graph's input when
            the graph fixes it.

    Attributes:
        batch_size: the batch size the graph fixes (the OSNet export has 1: images are run one at a
            time), or None when it is dynamic.
        dim: embedding size ``D`` when the graph declares it, else None.

    Raises:
        FileNotFoundError: ``path`` or one of its external data files does not exist (the message
            names the path).
        ValueError: the file is not a loadable ONNX model, the graph's input is not ``[N, 3, H, W]`` or its fixed ``H, W`` differ from
            ``input_hw``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        providers: Sequence[str] | None = None,
        input_hw: tuple[int, int] = (256, 128),
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"re-ID embedder ONNX file not found: {self.path}")
        for extra in _external_data_files(self.path):
            if not extra.is_file():
                raise FileNotFoundError(
                    f"external data file of the ONNX model {self.path} not found: {extra} "
                    "(keep the .onnx and its data file side by side)"
                )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own Fail / NoSuchFile types
            if "No such file" in str(exc) or "not exist" in str(exc):
                raise FileNotFoundError(f"cannot load the ONNX model {self.path}: {exc}") from exc
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"cannot load the ONNX model {self.path} (not a valid ONNX file?): {first}") from exc
        inp = self._session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ValueError(f"{self.path}: expected an input [N, 3, H, W], got {shape}")
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        fixed_hw = shape[2:]
        if all(isinstance(s, int) for s in fixed_hw) and tuple(fixed_hw) != self.input_hw:
            raise ValueError(f"{self.path}: the graph takes {tuple(fixed_hw)} (H, W) images, input_hw is {self.input_hw}")
        self._input_name = inp.name
        self.batch_size = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        out_shape = self._session.get_outputs()[0].shape
        self.dim = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images -> the model's input, ``float32 [N, 3, H, W]`` (resized, ImageNet-normalised).

        Raises:
            ValueError: an image is not ``uint8 [H, W, 3]``.
        """
        out = np.empty((len(images), 3, *self.input_hw), dtype=np.float32)
        mean = torch.from_numpy(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.from_numpy(IMAGENET_STD).view(3, 1, 1)
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image {i}: expected uint8 [H, W, 3] RGB, got {img.dtype} {img.shape}")
            t = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].to(torch.float32) / 255.0
            t = F.interpolate(t, size=self.input_hw, mode="bilinear", align_corners=False, antialias=True)
            out[i] = ((t[0] - mean) / std).numpy()
        return out

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Identity embeddings of person crops.

        Args:
            images: a list of ``uint8 [H, W, 3]`` RGB images, any sizes.

        Returns:
            ``float32 [N, D]``, each row L2-normalised (``[0, D]`` for an empty list when ``D`` is known).

        Raises:
            ValueError: an image is not ``uint8 [H, W, 3]``.
        """
        images = list(images)
        if not images:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        x = self.preprocess(images)
        step = self.batch_size or 64
        feats = [self._session.run(None, {self._input_name: x[i : i + step]})[0] for i in range(0, len(x), step)]
        f = np.concatenate(feats, axis=0).astype(np.float32).reshape(len(x), -1)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``.

    Args:
        a: ``float [N, D]``.
        b: ``float [M, D]``.

    Returns:
        ``float32 [N, M]`` in ``[-1, 1]``; a zero row gives 0.

    Raises:
        ValueError: not 2-D or the feature sizes differ.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"cosine needs [N, D] and [M, D] arrays, got {a.shape} and {b.shape}")
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (an @ bn.T).astype(np.float32)
