"""``evaluate_downstream``: does an augmented dataset train a better re-ID model?

For every real fraction and seed it fine-tunes one torchreid model per arm, with the same seed,
start and hyper-parameters, and evaluates each on the real query/gallery only:

- ``real``: the kept real training images (torchreid's flip + random erasing);
- ``posegen``: plus the kept posegen images whose source image is kept;
- ``duplicate``: plus as many copies of real images (one per posegen image, of its source): more
  samples and optimisation steps, no new pose;
- ``flip``: plus as many horizontally flipped real images (same sources): the cheapest augmentation
  a user would try first. ``posegen`` minus ``duplicate`` / ``flip`` is the gain of the new images
  themselves; ``posegen`` minus ``real`` mixes it with the longer training.

This is the experiment of the PIDM paper (Bhunia et al., CVPR 2023: Market-1501, a pretrained
backbone, 20-100 % of the real training set, with and without generated images; repeated by PCDMs),
reported with mAP and Rank-1/5/10, several seeds, the duplicate and flip controls, and a leak check
on the generator's training data (the published protocol's generators had seen the test identities).
Protocols: Market-1501 standard splits (Zheng et al., ICCV 2015); CUHK03 as in
``../shared/data/cuhk03-detected`` (train on ``train/``; ``val/`` view A = query, view B = gallery).
Re-ID with torchreid (Zhou et al., deep-person-reid / OSNet, ICCV 2019); the default start is OSNet
x0.25 trained on MSMT17, converted offline from ONNX (:mod:`posegen.downstream.pretrained`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

from .. import __version__
from .._io import atomic_write_json, atomic_write_text
from .data import (
    ARMS,
    LeakError,
    build_train_sets,
    check_generator_leak,
    check_leaks,
    extra_sources_needed,
    flip_paths,
    load_real,
    load_synthetic,
)
from .pretrained import ONNX_ARCH, default_osnet_onnx
from .reid import LOSSES, MODELS, resolve_device, train_and_evaluate
from .report import summarize_runs, verdicts, write_report

__all__ = ["evaluate_downstream", "default_arms", "resolve_init", "run_key"]

Progress = Callable[[str, int, int], None]


def default_arms(augmented: bool) -> tuple[str, ...]:
    """Every arm that can run: all four with an augment output, else ``real``, ``duplicate``, ``flip``."""
    return ARMS if augmented else tuple(a for a in ARMS if a != "posegen")


def resolve_init(model: str, init_weights, from_scratch: bool) -> Path | None:
    """The file every model starts from, or None (random init).

    ``from_scratch`` -> None; a given ``init_weights`` -> that file; else, for ``osnet_x0_25``, the
    shared OSNet x0.25 MSMT17 ONNX file (:func:`posegen.downstream.pretrained.default_osnet_onnx`).

    Raises:
        ValueError: both ``init_weights`` and ``from_scratch``; or no offline pretrained weights
            for ``model``.
        FileNotFoundError: the file does not exist (the message names it).
    """
    if from_scratch:
        if init_weights is not None:
            raise ValueError("give --init-weights or --from-scratch, not both")
        return None
    if init_weights is None:
        if model != ONNX_ARCH:
            raise ValueError(
                f"no offline pretrained weights for {model}: give --init-weights FILE (a local checkpoint) "
                f"or --from-scratch (only {ONNX_ARCH} has a default, the shared MSMT17 ONNX file)"
            )
        path = default_osnet_onnx()
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained re-ID weights not found: {path} (set $POSEGEN_OSNET_ONNX, give --init-weights, or --from-scratch)"
            )
        return path
    path = Path(init_weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--init-weights file not found: {path}")
    if path.suffix.lower() == ".onnx" and model != ONNX_ARCH:
        raise ValueError(f"{path} is an ONNX export of {ONNX_ARCH}; it cannot start a {model}")
    return path


def _validate(fractions, seeds, arms, model, loss, epochs, batch_size, height, width, augmented_out):
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
    if augmented_out is None and "posegen" in arms:
        raise ValueError("the posegen arm needs an augment output folder (--augmented OUT)")


def evaluate_downstream(
    real_root: str | os.PathLike,
    augmented_out: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    layout: str | None = None,
    model: str = "osnet_x0_25",
    fractions: Sequence[float] = (1.0,),
    seeds: Sequence[int] = (0,),
    arms: Sequence[str] | None = None,
    epochs: int = 6,
    height: int = 256,
    width: int = 128,
    batch_size: int = 32,
    lr: float = 1e-3,
    loss: str = "softmax",
    device: str = "cpu",
    init_weights: str | os.PathLike | None = None,
    from_scratch: bool = False,
    fixbase_epochs: int = 0,
    classifier_lr_mult: float = 10.0,
    allow_leak: bool = False,
    workers: int = 0,
    threads: int | None = None,
    max_train_pids: int | None = None,
    max_test_pids: int | None = None,
    command: str | None = None,
    resume: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Fine-tune torchreid models on real vs real+posegen vs real+duplicate vs real+flip; report the gain.

    Args:
        real_root: the real dataset folder with the train split *and* the query/gallery splits
            (Market-1501 root; CUHK03 ``detected/`` holding ``train/`` and ``val/``; any layout
            :func:`posegen.data.load_dataset` reads). Training uses its train split, evaluation its
            query/gallery splits (never anything synthetic).
        augmented_out: a ``posegen augment`` output folder (OUT). Only its kept synthetic images
            are used; their sources are located in ``real_root`` through ``OUT/.posegen/run.json``,
            so OUT may have been made from a sub-folder (e.g. CUHK03 ``detected/train``), or from
            the ``--real-fraction`` subset (``augment --real-fraction F --subset-seeds S``). None:
            no ``posegen`` arm (``duplicate`` and ``flip`` then add one image per real image).
        out_dir: the report folder (created; existing report files are replaced). Holds
            ``results.json``, ``runs.csv``, ``summary.csv``, ``summary.md``, ``cmc.png``, ``logs/``
            (torchreid's output per run) and, for the ``flip`` arm, ``flipped/``.
        layout: force the layout of ``real_root``.
        model: ``osnet_x0_25`` (default), ``osnet_x1_0`` or ``resnet50``; always built with
            ``pretrained=False`` (nothing is downloaded); see ``init_weights``.
        fractions: real fractions in ``(0, 1]`` (``--real-fraction``); >= 1 image per pid is kept;
            nested (:func:`posegen.data.subsets.subsample_real`).
        seeds: one run per seed, arm and fraction; a seed fixes the real subset and the training.
        arms: subset of :data:`~posegen.downstream.data.ARMS`; None = :func:`default_arms`.
        epochs, height, width, batch_size, lr, loss: identical for every arm
            (:func:`posegen.downstream.reid.train_and_evaluate`).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        init_weights: local file every model starts from; None = the shared OSNet x0.25 MSMT17 ONNX
            file for ``osnet_x0_25`` (:func:`resolve_init`).
        from_scratch: random init instead (the explicit opt-out).
        fixbase_epochs: classifier-only epochs first (pretrained layers frozen).
        classifier_lr_mult: with pretrained weights the new classifier learns at ``lr *
            classifier_lr_mult`` (the pretrained layers at ``lr``); ignored from scratch.
        allow_leak: run even when the generator's training data includes (or cannot be verified
            not to include) evaluation images or identities; every table is then marked LEAKED.
        workers: DataLoader worker processes.
        threads: torch CPU threads during training/evaluation (None: torch's default).
        max_train_pids, max_test_pids: restrict to the first N train / query identities — quick
            trials only (:func:`posegen.downstream.data.load_real`); the report records them.
        command: the command line, recorded in the report.
        resume: reuse finished runs from an earlier, interrupted call into the same ``out_dir``.
            Every finished run is saved at once as ``out_dir/runs/fraction<F>-seed<S>-<arm>.json``
            with a key (:func:`run_key`: the exact training list, query/gallery, start weights and
            every hyper-parameter); with ``resume`` a saved run whose key matches is taken as it is
            (marked ``"resumed": True``) and any other is trained again. A 100 % table (hours on a
            CPU) can so be finished over several sessions.
        progress: ``progress(stage, done, total)``: stage ``"flip"`` (flipped images written),
            ``"train"`` (optimisation steps over all runs), ``"runs"`` (finished runs).

    Returns:
        The result dict, also written to ``out_dir/results.json``: ``config`` (the arguments),
        ``protocol`` (layout, image and identity counts, synthetic images available),
        ``generator`` (:class:`~posegen.downstream.data.GeneratorCheck` as a dict, or None),
        ``runs`` (one dict per fraction × seed × arm: ``fraction``, ``seed``, ``arm``, ``n_real``,
        ``n_extra``, ``n_images``, ``n_pids``, ``mAP``, ``rank1``, ``rank5``, ``rank10`` in [0, 1],
        ``cmc`` (50 floats, ranks 1..50), ``steps``, ``train_seconds``, ``eval_seconds``,
        ``resumed``),
        ``summary`` (:func:`posegen.downstream.report.summarize_runs`), ``verdicts``, ``files``,
        ``versions``, ``wall_seconds``.

    Raises:
        ValueError: a bad argument (fraction, seed list, arm, model, loss, device, ``posegen``
            without an augment output), a dataset without query/gallery, or a training set smaller
            than a batch.
        posegen.downstream.LeakError: the generator saw query/gallery images or identities (or
            its training data is unknown) and ``allow_leak`` is False; or a synthetic image's
            source or pid belongs to query/gallery, its source is unknown, or its source was
            dropped (see :func:`posegen.downstream.data.check_leaks`; never overridable).
        FileNotFoundError: missing ``manifest.parquet``, synthetic image or weights file.
        posegen.data.LayoutError: ``real_root`` is not a dataset.
        ImportError: torchreid or its undeclared dependencies are missing.
    """
    t_start = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    fractions = [float(f) for f in fractions]
    seeds = [int(s) for s in seeds]
    arms = tuple(arms) if arms is not None else default_arms(augmented_out is not None)
    _validate(fractions, seeds, arms, model, loss, epochs, batch_size, height, width, augmented_out)
    init = resolve_init(model, init_weights, from_scratch)
    fixbase = int(fixbase_epochs)
    cls_mult = 1.0 if init is None else float(classifier_lr_mult)
    arms = tuple(a for a in ARMS if a in set(arms))  # report order
    device = resolve_device(device)
    out = Path(out_dir).expanduser().resolve()

    real = load_real(real_root, layout, max_train_pids=max_train_pids, max_test_pids=max_test_pids)
    syn = None
    generator = None
    if augmented_out is not None:
        generator = check_generator_leak(augmented_out, real)
        if generator.leaked and not allow_leak:
            raise LeakError(
                "refusing to evaluate: " + "; ".join(generator.notes)
                + ". Pass --allow-leak to run anyway (every table is then marked LEAKED)."
            )
        syn = load_synthetic(augmented_out, real)
        check_leaks(syn, real)  # before any subsampling: a test image or identity fails the run

    flipped = None
    if "flip" in arms:
        needed = set().union(*(extra_sources_needed(real, syn, f, s) for f in fractions for s in seeds))
        flipped = flip_paths(real, needed, out / "flipped", progress=lambda d, t: progress("flip", d, t))

    # Every training set first (cheap), so a leak or a too-small set fails before any training.
    plan = []
    for fraction in fractions:
        for seed in seeds:
            sets = build_train_sets(real, syn, fraction, seed, arms, flipped=flipped)
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

    hyper = {
        "model": model, "init_weights": None if init is None else _digest(init), "epochs": int(epochs),
        "height": int(height), "width": int(width), "batch_size": int(batch_size), "lr": float(lr), "loss": loss,
        "fixbase_epochs": fixbase, "classifier_lr_mult": cls_mult,
    }  # fmt: skip
    inside = str(out) + os.sep  # images written into the report (flipped/) are keyed relative to it
    keys = [
        run_key([(f"OUT/{x[len(inside):]}" if x.startswith(inside) else x, y, c) for x, y, c in ts.as_torchreid()], query, gallery, hyper)
        for ts in plan
    ]  # fmt: skip
    saved = [_load_saved_run(out / "runs" / _run_name(ts), k) if resume else None for ts, k in zip(plan, keys)]
    estimated = [0 if old is not None else (ts.stats["n_images"] // batch_size) * epochs for ts, old in zip(plan, saved)]
    total_steps = sum(estimated)
    done_steps = 0
    runs = []
    for i, (ts, key, old) in enumerate(zip(plan, keys, saved)):
        if old is not None:
            runs.append({**old, "resumed": True})
            progress("runs", i + 1, len(plan))
            continue
        log = io.StringIO()
        offset = done_steps
        res = train_and_evaluate(
            ts.as_torchreid(), query, gallery, num_classes=ts.num_classes, seed=ts.seed, model=model,
            epochs=epochs, height=height, width=width, batch_size=batch_size, lr=lr, loss=loss,
            device=device, init_weights=init, fixbase_epochs=fixbase, classifier_lr_mult=cls_mult, workers=workers, threads=threads, log=log,
            progress=lambda s, t: progress("train", min(offset + s, total_steps), total_steps),
        )  # fmt: skip
        done_steps = offset + max(res["steps"], estimated[i])
        progress("train", min(done_steps, total_steps), total_steps)
        atomic_write_text(out / "logs" / f"{_run_name(ts)}.log", log.getvalue())
        run = {"fraction": ts.fraction, "seed": ts.seed, "arm": ts.arm, **ts.stats, **res}
        run["cmc"] = [float(c) for c in run["cmc"]]  # JSON as saved, so a resumed run reads the same
        atomic_write_json(out / "runs" / f"{_run_name(ts)}.json", {"key": key, "run": run})
        runs.append({**run, "resumed": False})
        progress("runs", i + 1, len(plan))

    result = {
        "config": {
            "real_root": real.root,
            "augmented_out": None if augmented_out is None else str(Path(augmented_out).expanduser().resolve()),
            "synthetic_source": "none" if augmented_out is None else str(Path(augmented_out).expanduser().resolve()),
            "layout": layout,
            "model": model,
            "from_scratch": init is None,
            "init_weights": None if init is None else str(init.resolve()),
            "fixbase_epochs": fixbase,
            "classifier_lr_mult": cls_mult,
            "allow_leak": bool(allow_leak),
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
        "generator": None if generator is None else generator.as_dict(),
        "runs": runs,
        "summary": summarize_runs(runs),
        "versions": _versions(),
        "command": command,
    }
    result["verdicts"] = verdicts(result["summary"])
    result["wall_seconds"] = time.perf_counter() - t_start
    write_report(result, out)
    return result


def run_key(train: Sequence[tuple], query: Sequence[tuple], gallery: Sequence[tuple], hyper: dict) -> str:
    """The identity of one training run, for ``resume``: SHA-256 (hex) of the training list
    ``[(img_path, label, camid), ...]``, the query and gallery lists ``[(img_path, pid, camid), ...]``
    (in order: the sampler and the evaluation depend on it) and the hyper-parameters (a JSON-able
    dict, the start weights by content digest). Device, threads and workers are left out: they
    change the speed, not the experiment."""
    h = hashlib.sha256()
    for part in (train, query, gallery):
        h.update(json.dumps([[str(a), int(b), int(c)] for a, b, c in part]).encode())
    h.update(json.dumps(hyper, sort_keys=True).encode())
    return h.hexdigest()


def _run_name(ts) -> str:
    return f"fraction{ts.fraction:g}-seed{ts.seed}-{ts.arm}"


def _digest(path: Path) -> str:
    from ..repose.provenance import file_digest

    return file_digest(path)


def _load_saved_run(path: Path, key: str) -> dict | None:
    """The run saved at ``path`` (``.json`` added) when its key is ``key``; None when there is no
    such file, it is unreadable, or it belongs to another experiment."""
    f = path.with_name(path.name + ".json")
    try:
        rec = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return rec.get("run") if isinstance(rec, dict) and rec.get("key") == key else None


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
