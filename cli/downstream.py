"""``posegen eval-downstream``: the Typer command over :func:`posegen.downstream.evaluate_downstream`.

Registered in :mod:`posegen.cli.app` as ``app.command("eval-downstream")(eval_downstream_cmd)``.
The command only parses options, calls the library, and renders progress and the result table.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

__all__ = ["eval_downstream_cmd", "parse_floats", "parse_ints", "results_table"]

console = Console(stderr=True)


def _parse_list(text: str, what: str, cast, kind: str) -> list:
    try:
        values = [cast(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise typer.BadParameter(f"{what}: expected comma-separated {kind}, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"{what}: give at least one value")
    return values


def parse_floats(text: str, what: str) -> list[float]:
    """``"0.2,0.4"`` -> ``[0.2, 0.4]``; raises ``typer.BadParameter`` naming ``what``."""
    return _parse_list(text, what, float, "numbers")


def parse_ints(text: str, what: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; raises ``typer.BadParameter`` naming ``what``."""
    return _parse_list(text, what, int, "integers")


def results_table(result: dict, title: str | None = None) -> Table:
    """A Rich table of ``result["summary"]``: percent, mean ± std over seeds, Δ vs real (paired)."""
    table = Table(title=title or "posegen eval-downstream (percent, mean ± std over seeds)")
    for col in ("fraction", "arm", "images", "seeds", "mAP", "Rank-1", "Rank-5", "Rank-10", "Δ mAP", "Δ Rank-1"):
        table.add_column(col, justify="left" if col == "arm" else "right")

    def pm(r, key, signed=False):
        if f"{key}_mean" not in r:
            return "—"
        return f"{100 * r[f'{key}_mean']:{'+' if signed else ''}.1f} ± {100 * r[f'{key}_std']:.1f}"

    for r in result["summary"]:
        table.add_row(
            f"{r['fraction']:.2f}", r["arm"], f"{r['n_images']:.0f}", str(r["n_seeds"]),
            pm(r, "mAP"), pm(r, "rank1"), pm(r, "rank5"), pm(r, "rank10"),
            pm(r, "delta_mAP", True), pm(r, "delta_rank1", True),
        )  # fmt: skip
    return table


def eval_downstream_cmd(
    data: Path = typer.Option(..., "--data", help="Real dataset folder with train AND query/gallery splits (Market-1501 root, CUHK03 detected/ with train/ and val/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder: results.json, runs.csv, summary.csv, summary.md, cmc.png, logs/."),
    augmented: Optional[Path] = typer.Option(None, "--augmented", help="A posegen augment output folder (its kept synthetic images are the posegen arm; `augment --real-fraction F --subset-seeds S` makes one for a fraction)."),
    layout: Optional[str] = typer.Option(None, help="Force the layout of --data: market1501, cuhk03, deepfashion or generic."),
    model: str = typer.Option("osnet_x0_25", "--model", help="osnet_x0_25 (default start: OSNet x0.25 pretrained on MSMT17, the shared ONNX file), osnet_x1_0 or resnet50 (need --init-weights or --from-scratch)."),
    real_fraction: str = typer.Option("1.0", "--real-fraction", help="Fractions of the real training images to keep, e.g. '0.2,0.4,0.6,0.8' (>= 1 image per identity)."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Seeds, e.g. '0,1,2' (mean ± std over them)."),
    arms: Optional[str] = typer.Option(None, "--arms", help="Arms to train: real, posegen, duplicate, flip (default: all that can run; posegen needs --augmented)."),
    epochs: int = typer.Option(6, "--epochs", help="Training epochs (every arm)."),
    height: int = typer.Option(256, "--height", help="Input height."),
    width: int = typer.Option(128, "--width", help="Input width."),
    batch_size: int = typer.Option(32, "--batch-size", help="Training batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (cosine decay)."),
    loss: str = typer.Option("softmax", "--loss", help="softmax, or triplet (softmax + hard triplet, 4 images per identity)."),
    init_weights: Optional[Path] = typer.Option(None, "--init-weights", help="Local file to start every model from: a torch/safetensors checkpoint or a BatchNorm-folded OSNet .onnx (default for osnet_x0_25: ../shared/weights/osnet/osnet_x0_25_msmt17.onnx or $POSEGEN_OSNET_ONNX). Never downloaded."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Random initialisation instead of pretrained weights."),
    fixbase_epochs: int = typer.Option(0, "--fixbase-epochs", min=0, help="Classifier-only epochs first (pretrained layers frozen)."),
    classifier_lr_mult: float = typer.Option(10.0, "--classifier-lr-mult", help="With pretrained weights: the new classifier's learning rate = --lr times this."),
    allow_leak: bool = typer.Option(False, "--allow-leak", help="Run even if the generator saw evaluation images/identities (or that cannot be verified); tables are marked LEAKED."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's); 1 is often fastest on a shared CPU."),
    max_train_pids: Optional[int] = typer.Option(None, "--max-train-pids", help="Quick trial: only the first N training identities."),
    max_test_pids: Optional[int] = typer.Option(None, "--max-test-pids", help="Quick trial: only the first N query identities (and their gallery images)."),
    resume: bool = typer.Option(False, "--resume", help="Reuse the runs an interrupted call finished in --out (same training set, start and settings); train the rest."),
):
    """Fine-tune torchreid re-ID models on real vs real+posegen vs real+duplicate vs real+flip images; report the gain (leak-checked)."""
    from posegen.data import LayoutError
    from posegen.downstream import evaluate_downstream

    fractions = parse_floats(real_fraction, "--real-fraction")
    seed_list = parse_ints(seeds, "--seeds")
    arm_list = None if arms is None else tuple(a.strip() for a in arms.split(",") if a.strip())
    opts = {
        "--data": data, "--out": out, "--augmented": augmented, "--layout": layout,
        "--model": model, "--real-fraction": real_fraction, "--seeds": seeds, "--arms": arms, "--epochs": epochs,
        "--height": height, "--width": width, "--batch-size": batch_size, "--lr": lr, "--loss": loss,
        "--init-weights": init_weights, "--from-scratch": from_scratch or None, "--fixbase-epochs": fixbase_epochs or None,
        "--classifier-lr-mult": classifier_lr_mult,
        "--allow-leak": allow_leak or None, "--device": device, "--workers": workers, "--threads": threads,
        "--max-train-pids": max_train_pids, "--max-test-pids": max_test_pids, "--resume": resume or None,
    }  # fmt: skip
    command = "posegen eval-downstream " + " ".join(
        k if v is True else f"{k} {shlex.quote(str(v))}" for k, v in opts.items() if v is not None
    )
    bars = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
    )  # fmt: skip
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total, completed=done)
        bars.update(tasks[stage], completed=done, total=total)

    t0 = time.perf_counter()
    try:
        with bars:
            result = evaluate_downstream(
                data, augmented, out, layout=layout, model=model, fractions=fractions,
                seeds=seed_list, arms=arm_list, epochs=epochs, height=height, width=width,
                batch_size=batch_size, lr=lr, loss=loss, device=device, init_weights=init_weights,
                from_scratch=from_scratch, fixbase_epochs=fixbase_epochs, classifier_lr_mult=classifier_lr_mult,
                allow_leak=allow_leak,
                workers=workers, threads=threads, max_train_pids=max_train_pids, max_test_pids=max_test_pids,
                command=command, resume=resume, progress=update,
            )  # fmt: skip
    except (LayoutError, FileNotFoundError, ValueError, ImportError) as e:  # LeakError is a ValueError
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    leaked = bool((result.get("generator") or {}).get("leaked"))
    console.print(results_table(result, title="LEAKED (--allow-leak): the generator saw evaluation data" if leaked else None))
    for line in result.get("verdicts", []):
        console.print(line)
    p = result["protocol"]
    console.print(
        f"test: {p['n_query']} query / {p['n_gallery']} gallery ({p['n_test_pids']} identities, real only); "
        f"synthetic available: {p['n_synthetic_available']}; {(time.perf_counter() - t0) / 60:.1f} min"
    )
    console.print(f"report: {result['files']['markdown']}  plot: {result['files']['cmc_png']}  data: {result['files']['json']}")
