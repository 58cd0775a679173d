"""Latent space of posegen's default re-posing model: the TAEF2 tiny autoencoder and the
aspect-preserving letterbox frame images and keypoints are mapped into (256x128, h x w)."""

from .frame import Letterbox, letterbox_params, to_frame_keypoints, from_frame_keypoints
from .taef2 import LATENT_CHANNELS, LATENT_SCALE, TAEF2, default_taef2_dir, load_taef2

__all__ = [
    "TAEF2",
    "load_taef2",
    "default_taef2_dir",
    "LATENT_CHANNELS",
    "LATENT_SCALE",
    "Letterbox",
    "letterbox_params",
    "to_frame_keypoints",
    "from_frame_keypoints",
]
