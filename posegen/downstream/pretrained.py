"""Pretrained re-ID backbones, offline: torchreid OSNet from a BatchNorm-folded ONNX export.

``../shared/weights/osnet/osnet_x0_25_msmt17.onnx`` is torchreid's ``osnet_x0_25`` trained on
MSMT17 (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019; model
zoo of deep-person-reid, MIT), exported to ONNX with every BatchNorm folded into the convolution
before it. Its initializer names follow torchreid's module names:

- ``<conv>.weight``: the folded convolution weight (``gamma / sqrt(var + eps)`` times the original);
- ``<block>.conv.weight_bias`` (``ConvLayer``, ``Conv1x1``, ``Conv1x1Linear``) or
  ``<block>.conv2.weight_bias`` (``LightConv3x3``): the folded BatchNorm's shift
  ``beta - gamma * mean / sqrt(var + eps)``, one per output channel;
- ``fc.0.weight`` / ``fc.0.bias``: the embedding layer with its BatchNorm1d (``fc.1``) folded in;
- no ``classifier``: the export ends at the 512-d embedding (eval-mode output of torchreid OSNet).

:func:`osnet_state_dict_from_onnx` turns this back into a torchreid state dict: folded weights as
they are, and each BatchNorm an identity with the folded shift as its bias (``weight 1``,
``running_mean 0``, ``running_var 1 - eps`` so that ``1 / sqrt(var + eps) = 1`` exactly). In
``eval()`` mode the model then computes what the ONNX graph computes.

Fine-tuning runs BatchNorm in training mode, where each batch is normalised by its own statistics:
an identity BatchNorm would then rescale every channel to unit variance and lose the pretrained
scales. :func:`calibrate_identity_batchnorm` fixes that without changing the function: it measures
each BatchNorm input's per-channel mean ``m`` and variance ``v`` on real training images and sets
``running_mean = m``, ``running_var = v``, ``weight = sqrt(v + eps)``, ``bias = m + shift``, so
``(x - m) / sqrt(v + eps) * sqrt(v + eps) + m + shift = x + shift`` in eval mode, and about the same
in training mode for batches like the calibration images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._io import shared_path

__all__ = [
    "DEFAULT_OSNET_ONNX",
    "default_osnet_onnx",
    "osnet_state_dict_from_onnx",
    "load_onnx_osnet",
    "calibrate_identity_batchnorm",
]

#: The pretrained backbone's file, relative to the shared folder beside the repository.
DEFAULT_OSNET_ONNX = "weights/osnet/osnet_x0_25_msmt17.onnx"

#: The torchreid architecture the shared ONNX export was made from.
ONNX_ARCH = "osnet_x0_25"


def default_osnet_onnx() -> Path:
    """Where the pretrained OSNet x0.25 (MSMT17) ONNX file is looked for: ``$POSEGEN_OSNET_ONNX``,
    else ``../shared/`` + :data:`DEFAULT_OSNET_ONNX` (:func:`posegen._io.shared_path`; returned
    whether or not it exists, callers raise ``FileNotFoundError`` naming it)."""
    return shared_path(DEFAULT_OSNET_ONNX, "POSEGEN_OSNET_ONNX")


def _onnx_initializers(path: Path) -> dict[str, np.ndarray]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:  # pragma: no cover - onnx is an install requirement
        raise ImportError(f"reading {path} needs the 'onnx' package (onnx>=1.16,<1.23): {e}") from e
    try:
        # external data (``<file>.onnx.data``) is read from beside the file
        model = onnx.load(str(path), load_external_data=True)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a bad file
        raise ValueError(f"{path} is not a readable ONNX model: {e}") from None
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def osnet_state_dict_from_onnx(path: str | os.PathLike, arch: str = ONNX_ARCH) -> dict:
    """A torchreid OSNet state dict (without the classifier) from a BatchNorm-folded ONNX export.

    Args:
        path: the ``.onnx`` file (its ``.onnx.data`` external-data file beside it, if any).
        arch: the torchreid architecture the export was made from (``osnet_x0_25``).

    Returns:
        ``{name: float32 torch.Tensor}`` for every tensor of ``torchreid.models.build_model(arch)``
        except ``classifier.*``: convolutions and ``fc.0`` as in the file, each BatchNorm an
        identity carrying the folded shift as its bias (see the module docstring), ``fc.1`` a plain
        identity. ``num_batches_tracked`` is 0.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not an ONNX model, or its tensors do not cover the architecture (a tensor
            missing or of another shape; the message names the first few).
    """
    import torch

    from .reid import import_torchreid

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained re-ID weights not found: {path}")
    inits = _onnx_initializers(path)
    reid = import_torchreid()
    net = reid.models.build_model(arch, num_classes=1, pretrained=False)
    own = net.state_dict()
    out: dict = {}
    problems: list[str] = []
    bn_prefixes = sorted({k[: -len(".running_mean")] for k in own if k.endswith(".running_mean")})
    for prefix in bn_prefixes:
        n = own[prefix + ".weight"].numel()
        eps = float(dict(net.named_modules())[prefix].eps)
        parent = prefix.rsplit(".", 1)[0] if "." in prefix else ""
        if prefix == "fc.1":
            shift = np.zeros(n, dtype=np.float32)  # folded into fc.0
        else:
            cands = [f"{parent}.conv.weight_bias", f"{parent}.conv2.weight_bias"]
            found = [c for c in cands if c in inits]
            if not found:
                problems.append(f"no folded bias for {prefix} (looked for {' or '.join(cands)})")
                continue
            shift = inits[found[0]].astype(np.float32)
            if shift.shape != (n,):
                problems.append(f"{found[0]} has shape {shift.shape}, {prefix} needs ({n},)")
                continue
        out[prefix + ".weight"] = torch.ones(n)
        out[prefix + ".bias"] = torch.from_numpy(shift.copy())
        out[prefix + ".running_mean"] = torch.zeros(n)
        out[prefix + ".running_var"] = torch.full((n,), 1.0 - eps)
        out[prefix + ".num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    for k, v in own.items():
        if k in out or k.startswith("classifier."):
            continue
        if k not in inits:
            problems.append(f"{k} missing")
        elif tuple(inits[k].shape) != tuple(v.shape):
            problems.append(f"{k} has shape {tuple(inits[k].shape)}, expected {tuple(v.shape)}")
        else:
            out[k] = torch.from_numpy(inits[k].astype(np.float32).copy())
    if problems:
        raise ValueError(
            f"{path} does not match torchreid {arch}: {len(problems)} problem(s), e.g. " + "; ".join(problems[:3])
        )
    return out


def load_onnx_osnet(model, path: str | os.PathLike, arch: str = ONNX_ARCH) -> dict:
    """Load :func:`osnet_state_dict_from_onnx` into a torchreid ``model`` (its classifier is kept).

    Args:
        model: a torchreid ``OSNet`` built as ``arch`` (any ``num_classes``).
        path: the ONNX file.
        arch: the architecture of the export.

    Returns:
        ``{"loaded": n_tensors, "skipped": ["classifier.weight", "classifier.bias"]}``.

    Raises:
        FileNotFoundError, ValueError: see :func:`osnet_state_dict_from_onnx`; also ``ValueError``
        when ``model`` is not that architecture.
    """
    state = osnet_state_dict_from_onnx(path, arch)
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path} holds torchreid {arch}; the model to load it into differs ({wrong[0]})")
    own.update(state)
    model.load_state_dict(own)
    return {"loaded": len(state), "skipped": [k for k in own if k not in state]}


def calibrate_identity_batchnorm(model, images, batch_size: int = 64) -> int:
    """Re-express identity BatchNorms with data statistics, keeping the eval-mode function.

    For every ``BatchNorm1d/2d`` whose ``running_mean`` is all 0 and ``weight`` all 1 (the identity
    layers :func:`osnet_state_dict_from_onnx` makes), the per-channel mean ``m`` and (biased)
    variance ``v`` of its input over ``images`` are measured in eval mode, then ``running_mean = m``,
    ``running_var = v``, ``weight = sqrt(v + eps)``, ``bias = bias + m``. Eval-mode outputs are
    unchanged (up to float rounding); in training mode a batch like ``images`` is normalised back to
    the same values, so fine-tuning starts from the pretrained function. Other BatchNorms are left
    alone.

    Args:
        model: a ``torch.nn.Module`` (left in eval mode).
        images: float32 tensor ``[N, 3, H, W]``, normalised as the model expects (ImageNet mean/std).
        batch_size: forward batch size.

    Returns:
        The number of BatchNorm layers recalibrated.
    """
    import torch

    bns = [
        m
        for m in model.modules()
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
        and m.running_mean is not None
        and bool(torch.all(m.running_mean == 0))
        and bool(torch.all(m.weight == 1))
    ]
    if not bns:
        return 0
    sums: dict = {id(m): [0.0, 0.0, 0] for m in bns}

    def hook(module, inputs, _output):
        x = inputs[0].detach().double()
        dims = [0] + list(range(2, x.ndim))
        acc = sums[id(module)]
        acc[0] = acc[0] + x.sum(dims)
        acc[1] = acc[1] + (x * x).sum(dims)
        acc[2] += x.numel() // x.shape[1]

    handles = [m.register_forward_hook(hook) for m in bns]
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model(images[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for m in bns:
            s, ss, n = sums[id(m)]
            mean = (s / n).float()
            var = (ss / n - (s / n) ** 2).clamp_min(0).float()
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.weight.copy_(torch.sqrt(var + m.eps))
            m.bias.add_(mean)
    return len(bns)
