"""Shared test fixtures: a network guard, the ../shared locator, and small real CUHK03 subsets."""

from __future__ import annotations

import socket
from pathlib import Path

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
