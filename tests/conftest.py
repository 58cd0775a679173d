"""Shared test fixtures: a network guard, the ../shared locator, and small real CUHK03 subsets."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CUHK03 = SHARED / "data" / "cuhk03-detected" / "detected"
MARKET_KP = SHARED / "data" / "market1501-keypoints"


def require(path: Path) -> Path:
    """Skip the calling test with a clear reason when a ``../shared`` path is absent."""
    if not path.exists():
        pytest.skip(f"needs real data at {path} (the ../shared folder beside the repository is absent)")
    return path


# --------------------------------------------------------------------------- network guard
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded(real):
    def connect(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(
                f"test opened a network connection to {address!r}: posegen must never use the network"
            )
        return real(self, address, *args)

    return connect


def _no_lookup(host, port, *args, **kwargs):
    raise AssertionError(f"test looked up the host {host!r}:{port}: posegen must never use the network")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that opens an internet socket (AF_INET/AF_INET6); Unix sockets are allowed."""
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", _no_lookup)
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module: its models are tiny, and with 2 threads on a
    busy 2-core machine every op waits for a descheduled OpenMP worker (10-60x slower steps were
    measured). Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- real data
@pytest.fixture(scope="session")
def blazepose():
    """One BlazePose-full backend for the whole session (mediapipe's bundled weights)."""
    from posegen.pose.backends import get_backend

    be = get_backend("blazepose")
    yield be
    be.close()


@pytest.fixture(scope="session")
def cuhk03_train() -> Path:
    """The real CUHK03 detected train folder (skips when ../shared is absent)."""
    return require(CUHK03 / "train")


@pytest.fixture(scope="session")
def cuhk03_small(cuhk03_train, blazepose, tmp_path_factory):
    """``(root, manifest, poses)`` for the first 4 identities of real CUHK03 train (40 images).

    ``poses`` are real BlazePose-full keypoints, computed once per session.
    """
    from posegen.data import load_dataset
    from posegen.pose.extract import extract_poses

    manifest = load_dataset(cuhk03_train)
    manifest = manifest[manifest["pid"] < 4].reset_index(drop=True)
    out = tmp_path_factory.mktemp("cuhk03_small") / "poses.parquet"
    poses = extract_poses(manifest, cuhk03_train, blazepose, out=out)
    return cuhk03_train, manifest, poses


def standing_pose(noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A front-facing standing person in a 64x128 (w x h) image: COCO-17 ``float32 [17, 3]``
    (x, y, score 0.9), pixel-index coordinates, all joints present; ``noise`` adds Gaussian jitter
    (std in pixels) to x and y."""
    pts = {
        0: (32, 14), 1: (30, 12), 2: (34, 12), 3: (27, 13), 4: (37, 13),
        5: (24, 26), 6: (40, 26), 7: (20, 40), 8: (44, 40), 9: (18, 54), 10: (46, 54),
        11: (27, 58), 12: (37, 58), 13: (27, 80), 14: (37, 80), 15: (27, 102), 16: (37, 102),
    }  # fmt: skip
    kp = np.zeros((17, 3), np.float32)
    for k, (x, y) in pts.items():
        kp[k] = (x, y, 0.9)
    if noise:
        kp[:, :2] += np.random.default_rng(seed).normal(0, noise, (17, 2)).astype(np.float32)
    return kp
