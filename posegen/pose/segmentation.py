"""Person masks of crops from BlazePose's segmentation output.

The BlazePose GHUM landmark model (Bazarevsky et al. 2020, "BlazePose: On-device Real-time Body
Pose tracking"; the *full* model bundled in the ``mediapipe`` wheel) has, besides its 33 landmarks,
a person-segmentation output (``Identity_2``, logits ``[1, 256, 256, 1]`` over its square input).
The mask covers what a person carries and wears beyond the skeleton: a handbag, a plastic bag, a
backpack, loose clothes, hair. posegen's warp uses it so that these move with the person instead
of being left behind in the background (:func:`posegen.repose.latent.warp_inputs`).

The crop is taken as the person box, as the ``blazepose-heavy`` backend does: zero-padded to a
centred square of side ``roi_scale x max(H, W)``, resized to 256 x 256 (bilinear); the mask is
resized back and cropped to the image (bilinear), ``sigmoid`` of the logits. On a 2-core CPU, one
thread: about 20 ms per crop.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .backends import bundled_blazepose_file
from .movenet import load_tflite

__all__ = ["PersonSegmenter"]


class PersonSegmenter:
    """Soft person masks of person crops (BlazePose full's segmentation output).

    Args:
        weights: a BlazePose landmark ``.tflite`` with the ``Identity_2`` segmentation output;
            None = ``pose_landmark_full.tflite`` bundled in the installed mediapipe package.
        roi_scale: side of the square input relative to the crop's longer side.
        num_threads: LiteRT threads.

    Raises:
        FileNotFoundError: the weights file is missing (the message names the path).
        ImportError: LiteRT (``ai-edge-litert``) is not installed.
        ValueError: the model has no ``[1, 256, 256, 1]`` ``Identity_2`` output.
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, roi_scale: float = 1.25, num_threads: int = 1):
        path = bundled_blazepose_file("full") if weights is None else weights
        self._interp = load_tflite(path, "BlazePose landmark", num_threads)
        inp = self._interp.get_input_details()[0]
        outs = {d["name"]: d for d in self._interp.get_output_details()}
        seg = outs.get("Identity_2")
        if tuple(inp["shape"][1:]) != (256, 256, 3) or seg is None or tuple(seg["shape"]) != (1, 256, 256, 1):
            raise ValueError(f"{path} has no BlazePose segmentation output (Identity_2 [1, 256, 256, 1])")
        self._in, self._out = inp["index"], seg["index"]
        self.roi_scale = float(roi_scale)
        self.weights = str(path)

    def mask(self, image: np.ndarray) -> np.ndarray:
        """The person mask of one crop.

        Args:
            image: ``uint8 [H, W, 3]`` RGB, the person crop.

        Returns:
            ``float32 [H, W]`` in ``[0, 1]``: the probability that a pixel shows the person (with
            what they carry).

        Raises:
            ValueError: not a ``uint8 [H, W, 3]`` image.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        s = max(int(round(self.roi_scale * max(h, w))), max(h, w))
        x0, y0 = (s - w) // 2, (s - h) // 2
        square = np.zeros((s, s, 3), dtype=np.uint8)
        square[y0 : y0 + h, x0 : x0 + w] = image
        x = np.asarray(Image.fromarray(square).resize((256, 256), Image.BILINEAR), dtype=np.float32)[None] / 255.0
        self._interp.set_tensor(self._in, x)
        self._interp.invoke()
        logits = np.asarray(self._interp.get_tensor(self._out), dtype=np.float32)[0, :, :, 0]
        prob = (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)  # sigmoid without overflow
        big = np.asarray(Image.fromarray(prob).resize((s, s), Image.BILINEAR), dtype=np.float32)
        return np.clip(big[y0 : y0 + h, x0 : x0 + w], 0.0, 1.0)

    def masks(self, images) -> list[np.ndarray]:
        """:meth:`mask` of each image of a sequence."""
        return [self.mask(im) for im in images]
