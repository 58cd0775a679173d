"""Training and evaluating one re-ID model with torchreid (Zhou et al., deep-person-reid).

torchreid (PyPI ``torchreid==0.2.5``, imported as ``torchreid.reid``) provides the datasets
(``ImageDataset``, ``register_image_dataset``), the data manager (``ImageDataManager``: resize,
``random_flip`` + ``random_erase``, ImageNet normalisation), the models (``build_model``), the
engines (``ImageSoftmaxEngine``, ``ImageTripletEngine``: one ``forward_backward`` per batch) and the
metrics (``compute_distance_matrix``, ``evaluate_rank``: CMC and mAP with the Market-1501 rule of
Zheng et al. 2015, gallery images of the query's pid *and* camera are ignored).

Models are always built with ``pretrained=False``: nothing is ever downloaded. ``init_weights``
loads a local file instead: a torch/safetensors checkpoint (matching layers only) or a
BatchNorm-folded OSNet ONNX export (:mod:`posegen.downstream.pretrained`; its identity BatchNorms
are then calibrated on the training images so fine-tuning starts from the pretrained function).
"""

from __future__ import annotations

import contextlib
import io
import random
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np


__all__ = ["MODELS", "LOSSES", "import_torchreid", "resolve_device", "load_init_weights", "train_and_evaluate"]

#: Models selectable for the downstream evaluation (torchreid names).
MODELS: tuple[str, ...] = ("osnet_x0_25", "osnet_x1_0", "resnet50")
#: Losses: torchreid's softmax (cross-entropy with label smoothing) and softmax + hard triplet.
LOSSES: tuple[str, ...] = ("softmax", "triplet")

_DATASET_NAME = "posegen_manifest"
_MAX_RANK = 50
_REGISTERED = False


def import_torchreid():
    """Import ``torchreid.reid`` (quietly) and register posegen's manifest dataset once.

    Returns:
        The ``torchreid.reid`` module.

    Raises:
        ImportError: torchreid (or one of the packages it imports without declaring them: scipy,
            tensorboard, gdown, opencv) is not installed; the message says what to install.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Cython evaluation.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            from torchreid import reid
    except ImportError as e:
        raise ImportError(
            f"posegen eval-downstream needs torchreid==0.2.5 and the packages it imports "
            f"(tensorboard, gdown, scipy, opencv): {e}. Install posegen's 'downstream' dependencies."
        ) from e
    global _REGISTERED
    if not _REGISTERED:
        from ._torchreid_dataset import PosegenManifestDataset

        try:
            reid.data.register_image_dataset(_DATASET_NAME, PosegenManifestDataset)
        except ValueError:  # already registered (e.g. this module was reloaded)
            pass
        _REGISTERED = True
    return reid


def resolve_device(device: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when available) -> ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: an unknown device, or ``"cuda"`` without a CUDA GPU.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA GPU is available")
    return device


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_init_weights(model, path: str | Path) -> dict:
    """Load a local checkpoint into ``model`` (layers whose name and shape match).

    Accepts ``.safetensors`` files and torch checkpoints (a state dict, or a dict with a
    ``state_dict`` key as torchreid saves; a ``module.`` prefix from DataParallel is stripped).
    The classifier of a checkpoint trained on other identities has another shape and is skipped.

    Args:
        model: a ``torch.nn.Module``.
        path: the local file. Nothing is downloaded.

    Returns:
        ``{"loaded": n_tensors, "skipped": [names...]}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no tensor of the checkpoint matches the model.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--init-weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - torchreid checkpoints pickle numpy scalars; the user named this local file
            state = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    own = model.state_dict()
    matched, skipped = {}, []
    for k, v in state.items():
        k = k[7:] if k.startswith("module.") else k
        if k in own and hasattr(v, "shape") and own[k].shape == v.shape:
            matched[k] = v
        else:
            skipped.append(k)
    if not matched:
        raise ValueError(f"no tensor of {path} matches the model (is it a checkpoint of the same architecture?)")
    own.update(matched)
    model.load_state_dict(own)
    return {"loaded": len(matched), "skipped": skipped}


@contextlib.contextmanager
def _captured(log: io.StringIO):
    """Send torchreid's prints to ``log`` and silence its known warnings."""
    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Cython evaluation.*")
        warnings.filterwarnings("ignore", message=".*number of gallery samples.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.utils.data")
        yield


def _extract(model, loader, device: str):
    """Features of a test loader: ``(float32 [N, D] tensor on CPU, int64 pids [N], int64 camids [N])``."""
    import torch

    feats, pids, camids = [], [], []
    model.eval()
    with torch.no_grad():
        for data in loader:
            imgs = data["img"].to(device)
            feats.append(model(imgs).float().cpu())
            pids.append(np.asarray(data["pid"], dtype=np.int64))
            camids.append(np.asarray(data["camid"], dtype=np.int64))
    return torch.cat(feats, 0), np.concatenate(pids), np.concatenate(camids)


def train_and_evaluate(
    train: list[tuple[str, int, int]],
    query: list[tuple[str, int, int]],
    gallery: list[tuple[str, int, int]],
    *,
    num_classes: int,
    seed: int,
    model: str = "osnet_x0_25",
    epochs: int = 10,
    height: int = 128,
    width: int = 64,
    batch_size: int = 32,
    lr: float = 3e-4,
    loss: str = "softmax",
    device: str = "cpu",
    init_weights: str | Path | None = None,
    fixbase_epochs: int = 0,
    classifier_lr_mult: float = 1.0,
    workers: int = 0,
    threads: int | None = None,
    log: io.StringIO | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Train one torchreid model from scratch on ``train`` and evaluate it on query/gallery.

    The run is seeded with ``seed`` (Python ``random``, NumPy, torch) right before the data manager
    and the model are built, so the same ``seed`` gives the same initial weights in every arm and the
    same numbers on the same machine (CPU; cuDNN kernels may differ in the last digits on a GPU).

    Recipe (torchreid defaults): transforms ``random_flip`` + ``random_erase`` (training only), Adam
    (``lr``, weight decay 5e-4), cosine learning-rate decay over ``epochs``, label-smoothed
    cross-entropy; ``loss="triplet"`` adds the hard-mining triplet loss (margin 0.3) and samples
    batches with ``RandomIdentitySampler`` (4 images per identity). Features for evaluation are the
    model's embedding in ``eval()`` mode, compared with the Euclidean distance; CMC/mAP come from
    ``torchreid.metrics.evaluate_rank`` (Market-1501 rule; no CUHK03 single-shot metric).

    Args:
        train: ``[(img_path, label, camid)]`` with labels ``0..num_classes-1`` (contiguous, 0-based).
        query, gallery: ``[(img_path, pid, camid)]`` with the dataset's own pids/camids.
        num_classes: number of training identities.
        seed: run seed.
        model: one of :data:`MODELS`.
        epochs, height, width, batch_size, lr: training hyper-parameters (images are resized to
            ``height x width``; a batch is ``float32 [batch_size, 3, height, width]``).
        loss: one of :data:`LOSSES`.
        device: ``"cpu"`` or ``"cuda"``.
        init_weights: a local file to start from, else random init: ``.onnx`` = a BatchNorm-folded
            torchreid OSNet export (:func:`posegen.downstream.pretrained.load_onnx_osnet`, then
            :func:`~posegen.downstream.pretrained.calibrate_identity_batchnorm` on up to 256
            training images, test transform), anything else :func:`load_init_weights`.
        fixbase_epochs: the first epochs train only the new classifier, the pretrained layers
            frozen (torchreid's ``two_stepped_transfer_learning``); 0 trains everything throughout.
        classifier_lr_mult: with ``init_weights``, the new classifier learns at ``lr *
            classifier_lr_mult`` and the pretrained layers at ``lr`` (torchreid's ``staged_lr``).
        workers: DataLoader worker processes (0 = load in the main process).
        threads: torch CPU threads for this run (restored afterwards); None keeps torch's setting.
            On a CPU shared with other processes 1 thread is often faster than several (no
            OpenMP spin-waiting on descheduled threads).
        log: receives torchreid's printed output.
        progress: ``progress(step, total_steps)`` after each optimisation step.

    Returns:
        ``{"mAP": float, "cmc": float32 ndarray [50] (CMC at ranks 1..50, padded with its last value
        when the gallery is smaller), "rank1", "rank5", "rank10": float, "steps": int,
        "train_seconds": float, "eval_seconds": float, "final_loss": float}``; rates are in [0, 1].

    Raises:
        ValueError: unknown model/loss, or fewer training images than one batch.
        FileNotFoundError: ``init_weights`` is missing.
    """
    import torch

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid models: {', '.join(MODELS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
    if len(train) < batch_size:
        raise ValueError(f"{len(train)} training images is less than one batch ({batch_size}): lower --batch-size")
    if loss == "triplet" and batch_size % 4:
        raise ValueError(f"the triplet loss samples 4 images per identity: --batch-size must be a multiple of 4, got {batch_size}")
    reid = import_torchreid()
    from ._torchreid_dataset import PENDING

    log = log if log is not None else io.StringIO()
    use_gpu = device == "cuda"
    key = f"run-{id(train)}-{seed}"
    PENDING[key] = (train, query, gallery)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    try:
        with _captured(log):
            _seed_everything(seed)
            dm = reid.data.ImageDataManager(
                root=key, sources=_DATASET_NAME, height=height, width=width,
                transforms=["random_flip", "random_erase"], use_gpu=use_gpu,
                batch_size_train=batch_size, batch_size_test=max(batch_size, 64), workers=workers,
                train_sampler="RandomIdentitySampler" if loss == "triplet" else "RandomSampler",
                num_instances=4,
            )  # fmt: skip
            net = reid.models.build_model(model, num_classes=num_classes, loss=loss, pretrained=False, use_gpu=use_gpu)
            if init_weights is not None and Path(init_weights).suffix.lower() == ".onnx":
                from PIL import Image

                from .pretrained import calibrate_identity_batchnorm, load_onnx_osnet

                info = load_onnx_osnet(net, init_weights, arch=model)
                calib_paths = [p for p, _, _ in train[:: max(1, len(train) // 256)]][:256]
                calib = []
                for p in calib_paths:
                    with Image.open(p) as im:
                        calib.append(dm.transform_te(im.convert("RGB")))
                n_bn = calibrate_identity_batchnorm(net, torch.stack(calib))
                print(f"init weights {init_weights}: {info['loaded']} tensors loaded, classifier new; "
                      f"{n_bn} BatchNorms calibrated on {len(calib)} training images")  # fmt: skip
            elif init_weights is not None:
                info = load_init_weights(net, init_weights)
                print(f"init weights {init_weights}: {info['loaded']} tensors loaded, {len(info['skipped'])} skipped")
            net = net.to(device)
            if init_weights is not None and classifier_lr_mult != 1.0:
                # staged learning rates: the new classifier at lr * classifier_lr_mult, the rest at lr
                optimizer = reid.optim.build_optimizer(
                    net, optim="adam", lr=lr * classifier_lr_mult, staged_lr=True, new_layers=["classifier"],
                    base_lr_mult=1.0 / classifier_lr_mult,
                )  # fmt: skip
            else:
                optimizer = reid.optim.build_optimizer(net, optim="adam", lr=lr)
            scheduler = reid.optim.build_lr_scheduler(optimizer, lr_scheduler="cosine", max_epoch=epochs)
            if loss == "softmax":
                engine = reid.engine.ImageSoftmaxEngine(dm, net, optimizer, scheduler=scheduler, use_gpu=use_gpu)
            else:
                engine = reid.engine.ImageTripletEngine(dm, net, optimizer, margin=0.3, scheduler=scheduler, use_gpu=use_gpu)
            engine.max_epoch = epochs
            per_epoch = len(dm.train_loader)
            if per_epoch == 0:
                raise ValueError(
                    f"no full training batch: {len(train)} images, batch size {batch_size}"
                    + (" (the triplet sampler needs identities with >= 4 images)" if loss == "triplet" else "")
                )
            total = per_epoch * epochs
            step, last_loss = 0, float("nan")
            t0 = time.perf_counter()
            for epoch in range(epochs):
                engine.epoch = epoch
                engine.set_model_mode("train")
                if fixbase_epochs > 0:
                    # epochs < fixbase_epochs: only the classifier trains (the rest frozen, eval mode)
                    engine.two_stepped_transfer_learning(epoch, fixbase_epochs, ["classifier"])
                for data in dm.train_loader:
                    summary = engine.forward_backward(data)
                    # softmax: "loss"; triplet: "loss_t" + "loss_x" (each already weighted by 1)
                    last_loss = float(sum(v for k, v in summary.items() if k.startswith("loss")))
                    step += 1
                    if progress is not None:
                        progress(step, total)
                print(f"epoch {epoch + 1}/{epochs}: loss {last_loss:.4f} lr {engine.get_current_lr():.6f}")
                engine.update_lr()
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            name = dm.sources[0]
            qf, q_pids, q_camids = _extract(net, dm.test_loader[name]["query"], device)
            gf, g_pids, g_camids = _extract(net, dm.test_loader[name]["gallery"], device)
            distmat = reid.metrics.compute_distance_matrix(qf, gf, "euclidean").numpy()
            cmc, mAP = reid.metrics.evaluate_rank(
                distmat, q_pids, g_pids, q_camids, g_camids, max_rank=min(_MAX_RANK, distmat.shape[1])
            )
            eval_s = time.perf_counter() - t0
    finally:
        PENDING.pop(key, None)
        torch.set_num_threads(threads_before)
    cmc = np.asarray(cmc, dtype=np.float32)
    if len(cmc) < _MAX_RANK:
        cmc = np.concatenate([cmc, np.full(_MAX_RANK - len(cmc), cmc[-1], dtype=np.float32)])
    print(f"mAP {mAP:.4f} rank1 {cmc[0]:.4f} ({train_s:.1f} s training, {eval_s:.1f} s evaluation)", file=log)
    return {
        "mAP": float(mAP),
        "cmc": cmc,
        "rank1": float(cmc[0]),
        "rank5": float(cmc[4]),
        "rank10": float(cmc[9]),
        "steps": int(step),
        "train_seconds": float(train_s),
        "eval_seconds": float(eval_s),
        "final_loss": last_loss,
    }
