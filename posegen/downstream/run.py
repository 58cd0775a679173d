"""``evaluate_downstream``: does an augmented dataset train a better re-ID model?

For every real fraction and seed it trains one torchreid model per arm, with the same seed and
hyper-parameters, and evaluates each on the real query/gallery only:

- ``real``: the kept real training images (torchreid's flip + random erasing);
- ``synthetic``: plus the kept synthetic images whose source image is kept;
- ``duplicate``: plus as many duplicated real images (one more copy of each of those sources):
  more samples and optimisation steps, no new pose. ``synthetic`` minus ``duplicate`` is the gain
  of the new images themselves; ``synthetic`` minus ``real`` mixes it with the longer training.

This is the experiment of the PIDM paper (Bhunia et al., CVPR 2023: Market-1501, ResNet-50, 20-80 %
of the real training set, Rank-1 of single runs), reported with mAP and Rank-1/5/10, several seeds,
and the duplicate control. Protocols: Market-1501 standard splits (Zheng et al., ICCV 2015);
CUHK03 as in ``../shared/data/cuhk03-detected`` (train on ``train/``; ``val/`` view A = query,
view B = gallery). Re-ID with torchreid (Zhou et al., deep-person-reid / OSNet, ICCV 2019).
"""

from __future__ import annotations

import io
import os
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

from .. import __version__
from .._io import atomic_write_text
from .data import ARMS, build_train_sets, check_leaks, load_real, load_synthetic, make_flip_synthetic
from .reid import LOSSES, MODELS, resolve_device, train_and_evaluate
from .report import summarize_runs, write_report

__all__ = ["evaluate_downstream", "SYNTHETIC_STAND_INS"]

#: Stand-in synthetic sets that need no augment output.
SYNTHETIC_STAND_INS: tuple[str, ...] = ("flip",)

Progress = Callable[[str, int, int], None]


def _validate(fractions, seeds, arms, model, loss, epochs, batch_size, height, width, init_weights, augmented_out, synthetic):
    if not fractions:
        raise ValueError("give at least one real fraction")
    for f in fractions:
        if not (0.0 < float(f) <= 1.0):
            raise ValueError(f"real fraction must be in (0, 1], got {f}")
    if not seeds:
        raise ValueError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ValueError(f"unknown arm(s) {bad}; valid arms: {', '.join(ARMS)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid models: {', '.join(MODELS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
    for name, v in (("epochs", epochs), ("batch size", batch_size), ("height", height), ("width", width)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if init_weights is not None and not Path(init_weights).expanduser().is_file():
        raise FileNotFoundError(f"--init-weights file not found: {init_weights}")
    if synthetic is not None and synthetic not in SYNTHETIC_STAND_INS:
        raise ValueError(f"unknown synthetic stand-in {synthetic!r}; valid: {', '.join(SYNTHETIC_STAND_INS)}")
    if augmented_out is not None and synthetic is not None:
        raise ValueError("give either an augmented folder or a synthetic stand-in (--synthetic), not both")
    if augmented_out is None and synthetic is None and any(a != "real" for a in arms):
        raise ValueError(
            "the synthetic and duplicate arms need a synthetic set: give an augment output folder "
            "(--augmented OUT) or --synthetic flip (horizontally flipped real images, a stand-in)"
        )


def evaluate_downstream(
    real_root: str | os.PathLike,
    augmented_out: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    synthetic: str | None = None,
    layout: str | None = None,
    model: str = "osnet_x0_25",
    fractions: Sequence[float] = (1.0,),
    seeds: Sequence[int] = (0,),
    arms: Sequence[str] = ARMS,
    epochs: int = 10,
    height: int = 128,
    width: int = 64,
    batch_size: int = 32,
    lr: float = 3e-4,
    loss: str = "softmax",
    device: str = "cpu",
    init_weights: str | os.PathLike | None = None,
    workers: int = 0,
    threads: int | None = None,
    max_train_pids: int | None = None,
    max_test_pids: int | None = None,
    command: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Train torchreid models on real vs real+synthetic vs real+duplicated data; report the gain.

    Args:
        real_root: the real dataset folder with the train split *and* the query/gallery splits
            (Market-1501 root; CUHK03 ``detected/`` holding ``train/`` and ``val/``; any layout
            :func:`posegen.data.load_dataset` reads). Training uses its train split, evaluation its
            query/gallery splits (never anything synthetic).
        augmented_out: a ``posegen augment`` output folder (OUT). Only its kept synthetic images
            are used; their sources are located in ``real_root`` through ``OUT/.posegen/run.json``,
            so OUT may have been made from a sub-folder (e.g. CUHK03 ``detected/train``). None
            with ``synthetic="flip"`` or ``arms=("real",)``.
        out_dir: the report folder (created; existing report files are replaced). Holds
            ``results.json``, ``runs.csv``, ``summary.csv``, ``summary.md``, ``cmc.png``, ``logs/``
            (torchreid's output per run) and, with ``synthetic="flip"``, ``synthetic-flip/``.
        synthetic: ``"flip"``: use horizontally flipped copies of the real training images
            (written to ``out_dir/synthetic-flip``) as the synthetic set — a stand-in to exercise
            the protocol without a generator; None otherwise.
        layout: force the layout of ``real_root``.
        model: ``osnet_x0_25`` (default), ``osnet_x1_0`` or ``resnet50``; always built with
            ``pretrained=False`` (nothing is downloaded).
        fractions: real fractions in ``(0, 1]`` (``--real-fraction``); >= 1 image per pid is kept.
        seeds: one run per seed, arm and fraction; a seed fixes the real subset and the training.
        arms: subset of ``("real", "synthetic", "duplicate")``.
        epochs, height, width, batch_size, lr, loss: identical for every arm
            (:func:`posegen.downstream.reid.train_and_evaluate`).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        init_weights: local checkpoint to initialise every model from (same file for every arm).
        workers: DataLoader worker processes.
        threads: torch CPU threads during training/evaluation (None: torch's default); 1 is often
            fastest on a CPU shared with other processes.
        max_train_pids, max_test_pids: restrict to the first N train / query identities — quick
            trials only (:func:`posegen.downstream.data.load_real`); the report records them.
        command: the command line, recorded in the report.
        progress: ``progress(stage, done, total)``: stage ``"flip"`` (images written), ``"train"``
            (optimisation steps over all runs), ``"runs"`` (finished runs).

    Returns:
        The result dict, also written to ``out_dir/results.json``: ``config`` (the arguments),
        ``protocol`` (layout, image and identity counts, synthetic images available),
        ``runs`` (one dict per fraction × seed × arm: ``fraction``, ``seed``, ``arm``, ``n_real``,
        ``n_extra``, ``n_images``, ``n_pids``, ``mAP``, ``rank1``, ``rank5``, ``rank10`` in [0, 1],
        ``cmc`` (50 floats, ranks 1..50), ``steps``, ``train_seconds``, ``eval_seconds``),
        ``summary`` (:func:`posegen.downstream.report.summarize_runs`), ``files``, ``versions``,
        ``wall_seconds``.

    Raises:
        ValueError: a bad argument (fraction, seed list, arm, model, loss, device, missing
            synthetic set), a dataset without query/gallery, or a training set smaller than a batch.
        posegen.downstream.LeakError: a synthetic image's source or pid belongs to query/gallery,
            its source is unknown, or its source was dropped (see
            :func:`posegen.downstream.data.check_leaks`).
        FileNotFoundError: missing ``manifest.parquet``, synthetic image or ``init_weights``.
        posegen.data.LayoutError: ``real_root`` is not a dataset.
        ImportError: torchreid or its undeclared dependencies are missing.
    """
    t_start = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    fractions = [float(f) for f in fractions]
    seeds = [int(s) for s in seeds]
    _validate(fractions, seeds, tuple(arms), model, loss, epochs, batch_size, height, width, init_weights, augmented_out, synthetic)
    arms = tuple(a for a in ARMS if a in set(arms))  # report order
    needs_synthetic = any(a != "real" for a in arms)
    device = resolve_device(device)
    out = Path(out_dir).expanduser().resolve()

    real = load_real(real_root, layout, max_train_pids=max_train_pids, max_test_pids=max_test_pids)
    syn = None
    synthetic_source = "none"
    if needs_synthetic and augmented_out is not None:
        syn = load_synthetic(augmented_out, real)
        synthetic_source = str(Path(augmented_out).expanduser().resolve())
    elif needs_synthetic and synthetic == "flip":
        folder = make_flip_synthetic(real, out / "synthetic-flip", progress=lambda d, t: progress("flip", d, t))
        syn = load_synthetic(folder, real)
        synthetic_source = f"flip stand-in: {folder}"
    if syn is not None:
        check_leaks(syn, real)  # before any subsampling: a test image or identity fails the run

    # Every training set first (cheap), so a leak or a too-small set fails before any training.
    plan = []
    for fraction in fractions:
        for seed in seeds:
            sets = build_train_sets(real, syn, fraction, seed, arms)
            for arm in arms:
                ts = sets[arm]
                if ts.stats["n_images"] < batch_size:
                    raise ValueError(
                        f"the {arm} training set at fraction {fraction} has {ts.stats['n_images']} images, "
                        f"less than one batch ({batch_size}): lower --batch-size"
                    )
                plan.append(ts)
    root = Path(real.root)
    query = [(str(root / p), int(pid), int(c)) for p, pid, c in zip(real.query["path"], real.query["pid"], real.query["camid"])]
    gallery = [(str(root / p), int(pid), int(c)) for p, pid, c in zip(real.gallery["path"], real.gallery["pid"], real.gallery["camid"])]

    estimated = [(ts.stats["n_images"] // batch_size) * epochs for ts in plan]
    total_steps = sum(estimated)
    done_steps = 0
    runs = []
    for i, ts in enumerate(plan):
        log = io.StringIO()
        offset = done_steps
        res = train_and_evaluate(
            ts.as_torchreid(), query, gallery, num_classes=ts.num_classes, seed=ts.seed, model=model,
            epochs=epochs, height=height, width=width, batch_size=batch_size, lr=lr, loss=loss,
            device=device, init_weights=init_weights, workers=workers, threads=threads, log=log,
            progress=lambda s, t: progress("train", min(offset + s, total_steps), total_steps),
        )  # fmt: skip
        done_steps = offset + max(res["steps"], estimated[i])
        progress("train", min(done_steps, total_steps), total_steps)
        atomic_write_text(out / "logs" / f"fraction{ts.fraction:g}-seed{ts.seed}-{ts.arm}.log", log.getvalue())
        runs.append({"fraction": ts.fraction, "seed": ts.seed, "arm": ts.arm, **ts.stats, **res})
        progress("runs", i + 1, len(plan))

    result = {
        "config": {
            "real_root": real.root,
            "augmented_out": None if augmented_out is None else str(Path(augmented_out).expanduser().resolve()),
            "synthetic": synthetic,
            "synthetic_source": synthetic_source,
            "layout": layout,
            "model": model,
            "pretrained": False,
            "init_weights": None if init_weights is None else str(Path(init_weights).expanduser().resolve()),
            "fractions": fractions,
            "seeds": seeds,
            "arms": list(arms),
            "epochs": int(epochs),
            "height": int(height),
            "width": int(width),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "loss": loss,
            "optimizer": "adam (weight decay 5e-4), cosine lr decay",
            "transforms": ["random_flip", "random_erase"],
            "device": device,
            "workers": int(workers),
            "threads": threads,
            "max_train_pids": max_train_pids,
            "max_test_pids": max_test_pids,
        },
        "protocol": {
            "layout": real.layout,
            "n_train_images": int(len(real.train)),
            "n_train_pids": int(real.train["pid"].nunique()),
            "n_query": int(len(real.query)),
            "n_gallery": int(len(real.gallery)),
            "n_test_pids": int(real.query["pid"].nunique()),
            "n_synthetic_available": 0 if syn is None else int(len(syn)),
            "metric": "torchreid evaluate_rank (Market-1501 rule), euclidean distance, real query/gallery only",
        },
        "runs": runs,
        "summary": summarize_runs(runs),
        "versions": _versions(),
        "command": command,
    }
    result["wall_seconds"] = time.perf_counter() - t_start
    write_report(result, out)
    return result


def _versions() -> dict:
    import torch
    import torchvision

    try:
        from importlib.metadata import version

        treid = version("torchreid")
    except Exception:  # noqa: BLE001
        treid = "unknown"
    return {
        "posegen": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torchreid": treid,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
    }
