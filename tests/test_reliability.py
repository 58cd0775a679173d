"""Reliability under bad input and faults (issue 16): unusable images, huge images, broken model and
weights files, killed runs, --overwrite safety, CLI errors and progress without a terminal.

Small fixture trees are made in ``tmp_path``; tests that run ``augment`` copy a few real CUHK03 crops
from ``../shared`` (skipped when it is absent). The CLI is imported from the repository's ``cli``
package (the tree under test), and run in a subprocess where memory or a real stderr matters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import CUHK03, REPO, SHARED, require
from PIL import Image
from typer.testing import CliRunner

from posegen.augment import augment, summarize
from posegen.pose.formats import read_poses
from posegen.augment.run import STATE_DIR, _check_model, _prepare_out, written_files
from posegen.data import ImageReadError, load_dataset, read_image, read_image_fit
from posegen.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()
GOOD = ("0000_00.jpg", "0000_01.jpg", "0000_05.jpg", "0001_00.jpg", "0001_05.jpg")


def _cli_app():
    from cli.app import app  # the repository's CLI (the tree under test)

    return app


def _bad_files(folder: Path) -> dict[str, str]:
    """Write every kind of unusable image into ``folder`` (CUHK03 names); name -> expected reason start."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0002_00.jpg").write_bytes(b"")  # empty
    (folder / "0002_01.jpg").write_text("this is not a picture\n")  # text as .jpg
    Image.new("RGB", (1, 1), (10, 20, 30)).save(folder / "0002_02.png")  # 1x1
    good = Image.new("RGB", (40, 80), (200, 100, 50))
    good.save(folder / "full.jpg")
    (folder / "0002_03.jpg").write_bytes((folder / "full.jpg").read_bytes()[:300])  # truncated
    (folder / "full.jpg").unlink()
    os.symlink("nowhere.jpg", folder / "0002_04.jpg")  # dangling
    os.symlink("0002_05.jpg", folder / "0002_05.jpg")  # loop
    return {
        "0002_00.jpg": "rejected: unreadable image",
        "0002_01.jpg": "rejected: unreadable image (not an image file)",
        "0002_02.png": "rejected: image too small (1x1",
        "0002_03.jpg": "rejected: unreadable image",
        "0002_04.jpg": "rejected: missing image (dangling symlink",
        "0002_05.jpg": "rejected: unreadable image (symlink loop)",
    }


# --------------------------------------------------------------------------- reading images
def test_read_image_reasons_for_every_kind_of_bad_file(tmp_path):
    _bad_files(tmp_path)
    reasons = {}
    for f in sorted(tmp_path.iterdir()):
        with pytest.raises(ImageReadError) as e:
            read_image(f)
        reasons[f.name] = e.value.reason
    assert reasons["0002_01.jpg"] == "unreadable: not an image file"
    assert reasons["0002_02.png"].startswith("too small: 1x1")
    assert reasons["0002_03.jpg"].startswith("unreadable:")
    assert reasons["0002_04.jpg"] == "missing: dangling symlink to nowhere.jpg"
    assert reasons["0002_05.jpg"] == "unreadable: symlink loop"


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (60, 120), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 60, 20))  # blue band at the top of the stored pixels
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    arr = read_image(tmp_path / "rot.jpg")
    assert arr.shape == (60, 120, 3)  # shown upright: 120 wide, 60 high
    assert arr[30, 110, 2] > 200 and arr[30, 5, 0] > 200  # the top band is now on the right


def test_huge_jpeg_is_decoded_downscaled(tmp_path):
    Image.new("RGB", (4000, 3000), (90, 90, 90)).save(tmp_path / "big.jpg", quality=70)
    arr, size = read_image_fit(tmp_path / "big.jpg", max_side=500)
    assert size == (4000, 3000) and max(arr.shape[:2]) == 500 and arr.shape[:2] == (375, 500)


def test_layout_lists_dangling_and_looping_symlinks(tmp_path):
    _bad_files(tmp_path / "d")
    shutil.copy(require(CUHK03 / "train" / GOOD[0]), tmp_path / "d" / GOOD[0])
    names = set(load_dataset(tmp_path / "d", "cuhk03")["path"])
    assert {"0002_04.jpg", "0002_05.jpg"} <= names


# --------------------------------------------------------------------------- augment with bad inputs
@pytest.fixture(scope="module")
def bad_run(blazepose, tmp_path_factory):
    """One augment run (the shipped default model, K=1) over 5 real crops and 6 unusable files."""
    root = tmp_path_factory.mktemp("bad") / "data"
    expected = _bad_files(root)
    for name in GOOD:
        shutil.copy(require(CUHK03 / "train" / name), root / name)
    shutil.copy(root / GOOD[0], root / "holiday.jpg")  # a name CUHK03 does not take: a note, not a row
    out = root.parent / "out"
    calls: list[tuple[str, int, int]] = []
    manifest = augment(
        root, out, recipe=load_recipe("default"), backend=blazepose, k=1, seed=0,
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )  # fmt: skip
    bad_run_progress[:] = calls
    return root, out, manifest, expected


bad_run_progress: list[tuple[str, int, int]] = []


def test_copy_progress_counts_every_image(bad_run):
    """The CLI's stage table counts ``last done - first done``: a stage must start at 0."""
    copy = [(d, t) for stage, d, t in bad_run_progress if stage == "copy"]
    assert copy[0] == (0, len(GOOD)) and copy[-1] == (len(GOOD), len(GOOD))
    for stage in ("poses", "generate"):
        first = next(d for s_, d, _ in bad_run_progress if s_ == stage)
        assert first == 0, stage


def test_bad_inputs_are_rejected_rows_not_copied(bad_run):
    root, out, manifest, expected = bad_run
    real = manifest[~manifest["synthetic"]].set_index("path")
    for name, reason in expected.items():
        assert not real.loc[name, "kept"], name
        assert real.loc[name, "reason"].startswith(reason), (name, real.loc[name, "reason"])
        assert not (out / name).exists() and not (out / name).is_symlink()
    for name in GOOD:
        assert real.loc[name, "kept"] and real.loc[name, "reason"] == ""
        assert (out / name).read_bytes() == (root / name).read_bytes()  # copied byte for byte
    # no synthetic row for an unusable input, and one row per bad file
    assert not manifest[manifest["synthetic"]]["source"].isin(list(expected)).any()
    assert manifest["path"].value_counts().drop("", errors="ignore").max() == 1
    s = summarize(manifest)
    assert s["real"] == len(GOOD) and s["rejected_inputs"] == len(expected)
    assert sum(s["rejected_inputs_by_reason"].values()) == len(expected)
    page = (out / "report.html").read_text()
    assert f"Rejected input images: {len(expected)}" in page
    for name in expected:
        assert name in page
    # the enlarged dataset parses and holds only the good real images
    again = load_dataset(out)
    assert set(again.loc[~again["synthetic"], "path"]) == set(GOOD)


def test_overwrite_deletes_only_what_posegen_wrote(bad_run, tmp_path):
    _, out, manifest, _ = bad_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    (copy / "my-notes.txt").write_text("mine")
    (copy / "keep").mkdir()
    (copy / "keep" / "0009_00.jpg").write_bytes(b"my own image")
    own = written_files(copy)
    assert copy / "manifest.parquet" in own and copy / GOOD[0] in own
    assert copy / "my-notes.txt" not in own
    settings = json.loads((copy / STATE_DIR / "run.json").read_text())
    _prepare_out(copy, settings, resume=False, overwrite=True)
    left = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    assert left == [f"{STATE_DIR}/run.json", "keep/0009_00.jpg", "my-notes.txt"]


def test_copy_failure_is_a_rejected_row(blazepose, tmp_path, monkeypatch):
    """A file that read fine for its pose but cannot be copied (simulated: the tests may run as root)."""
    import posegen.augment.run as run

    root = tmp_path / "data"
    root.mkdir()
    for name in GOOD:
        shutil.copy(require(CUHK03 / "train" / name), root / name)
    real_copy = run._copy_file

    def copy(src, dst):
        if src.name == GOOD[1]:
            raise PermissionError(13, "Permission denied", str(src))
        real_copy(src, dst)

    monkeypatch.setattr(run, "_copy_file", copy)
    m = augment(root, tmp_path / "out", recipe=load_recipe("default"), backend=blazepose, k=1)
    row = m[(m["path"] == GOOD[1]) & ~m["synthetic"]].iloc[0]
    assert not row["kept"] and row["reason"] == "rejected: unreadable image (Permission denied)"
    assert not (tmp_path / "out" / GOOD[1]).exists()
    assert not (m["synthetic"] & (m["source"] == GOOD[1])).any()  # never re-posed
    assert summarize(m)["rejected_inputs"] == 1


def test_copy_stage_permission_denied_is_a_rejected_row(blazepose, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("runs as root: root reads a file whatever its permissions, so 'permission denied' cannot happen")
    root = tmp_path / "data"
    root.mkdir()
    for name in GOOD[:3]:
        shutil.copy(require(CUHK03 / "train" / name), root / name)
    (root / GOOD[2]).chmod(0)
    try:
        m = augment(root, tmp_path / "out", recipe=load_recipe("default"), backend=blazepose, k=1)
    finally:
        (root / GOOD[2]).chmod(0o644)
    row = m[m["path"] == GOOD[2]].iloc[0]
    assert not row["kept"] and row["reason"].startswith("rejected: unreadable image (permission denied")
    assert not (tmp_path / "out" / GOOD[2]).exists()


# --------------------------------------------------------------------------- memory
def test_huge_image_stays_under_2gb(tmp_path):
    """A 10000x10000 photo with a person in it: augment's peak RSS stays under 2 GB."""
    root = tmp_path / "data"
    root.mkdir()
    for name in GOOD[:2]:
        shutil.copy(require(CUHK03 / "train" / name), root / name)
    big = Image.new("RGB", (10000, 10000), (120, 120, 120))
    with Image.open(CUHK03 / "train" / "0001_01.jpg") as person:
        big.paste(person.convert("RGB").resize((3300, 10000), Image.BILINEAR), (3000, 0))
    big.save(root / "0002_00.jpg", quality=85)
    del big
    out = tmp_path / "out"
    # a fresh parent process runs the CLI and reports its children's peak RSS: this test process's
    # own earlier children (e.g. forked data loader workers) must not count
    probe = textwrap.dedent(
        f"""
        import resource, subprocess, sys
        code = "import sys; sys.argv[0] = 'posegen'; from cli.app import main; main()"
        r = subprocess.run([sys.executable, "-c", code, "augment", {str(root)!r}, "--out", {str(out)!r}, "-k", "1", "--quiet"],
                           capture_output=True, text=True)
        sys.stderr.write(r.stderr)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    peak_kib, rc = (int(v) for v in res.stdout.split())  # ru_maxrss is in KiB on Linux
    assert rc == 0, res.stderr[-3000:]
    assert "Feedback manager" not in res.stderr and "absl::InitializeLog" not in res.stderr  # native noise filtered
    print(f"peak RSS of augment: {peak_kib / 1024**2:.2f} GiB")
    assert peak_kib < 2 * 1024**2, f"peak RSS {peak_kib / 1024**2:.2f} GiB"
    m = pd.read_parquet(out / "manifest.parquet")
    real = m[~m["synthetic"]].set_index("path")
    assert real.loc["0002_00.jpg", "kept"] and (int(real.loc["0002_00.jpg", "width"]), int(real.loc["0002_00.jpg", "height"])) == (10000, 10000)
    assert (out / "0002_00.jpg").read_bytes() == (root / "0002_00.jpg").read_bytes()  # copied as is


def _run_cli(args: list[str], timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the repository's CLI in a subprocess (stderr is a pipe, not a terminal)."""
    code = "import sys; sys.argv[0] = 'posegen'; from cli.app import main; main()"
    e = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- clear errors, before OUT
@pytest.fixture()
def small_data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for name in GOOD[:2]:
        shutil.copy(require(CUHK03 / "train" / name), root / name)
    return root


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def test_garbage_onnx_is_a_clear_error_before_out(small_data, tmp_path):
    bad = tmp_path / "reid.onnx"
    bad.write_bytes(b"definitely not an onnx protobuf" * 10)
    out = tmp_path / "out"
    res = runner.invoke(_cli_app(), ["augment", str(small_data), "--out", str(out), "--reid-weights", str(bad)])
    assert "reid.onnx" in _one_line_error(res)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["safetensors", "config", "index"])
def test_corrupted_model_is_a_clear_error_before_out(small_data, tmp_path, damage):
    from posegen.repose import default_model_dir

    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    if damage == "safetensors":
        f = model / "unet" / "diffusion_pytorch_model.safetensors"
        f.write_bytes(f.read_bytes()[:1000])
    elif damage == "config":
        (model / "unet" / "config.json").write_text("{not json")
    else:
        (model / "model_index.json").write_text("garbage")
    out = tmp_path / "out"
    res = runner.invoke(_cli_app(), ["augment", str(small_data), "--out", str(out), "--model", str(model)])
    assert str(model) in _one_line_error(res)
    assert not out.exists()


def test_out_is_a_regular_file(small_data, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    res = runner.invoke(_cli_app(), ["augment", str(small_data), "--out", str(out)])
    assert "not a folder" in _one_line_error(res)
    assert out.read_text() == "not a folder"


def test_bad_scheduler_is_refused_before_out(small_data, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(_cli_app(), ["augment", str(small_data), "--out", str(out), "--scheduler", "nope"])
    assert "nope" in _one_line_error(res)
    assert not out.exists()  # the corrected rerun finds OUT untouched


@pytest.mark.parametrize("args", [["-k", "0"], ["--limit", "-1"], ["--limit", "0"]])
def test_k_and_limit_must_be_positive(small_data, tmp_path, args):
    res = runner.invoke(_cli_app(), ["augment", str(small_data), "--out", str(tmp_path / "out"), *args])
    assert res.exit_code == 2 and not (tmp_path / "out").exists()


def test_library_k_and_limit_must_be_positive(small_data, tmp_path):
    for kwargs in ({"k": 0}, {"limit": 0}, {"limit": -3}):
        with pytest.raises(ValueError, match="at least 1"):
            augment(small_data, tmp_path / "out", recipe=load_recipe("default"), backend=None, **kwargs)
        assert not (tmp_path / "out").exists()


def test_pixel_model_resolution_must_match_the_recipe():
    pipe = SimpleNamespace(resolution=(128, 64), scheduler=SimpleNamespace(config={}))
    with pytest.raises(ValueError, match="128x64.*64x32"):
        _check_model(pipe, load_recipe("tiny"), "ddim", None)
    _check_model(pipe, load_recipe("cuhk03"), "ddim", None)  # matches: no error
    with pytest.raises(ValueError, match="unknown scheduler"):
        _check_model(pipe, load_recipe("cuhk03"), "nope", "nope")


def test_augment_has_weights_option(small_data, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(
        _cli_app(), ["augment", str(small_data), "--out", str(out), "--backend", "movenet", "--weights", str(tmp_path / "none.tflite")]
    )
    assert "none.tflite" in _one_line_error(res)  # the weights reach the backend
    assert not out.exists()


# --------------------------------------------------------------------------- killed runs
def _settings():
    return {"root": "/data", "seed": 0, "version": "x"}


def test_killed_while_writing_first_run_json_is_not_stuck(tmp_path):
    for leftover in ({".run.json.a1b2c3d4.tmp": '{"root": "/da'}, {"run.json": '{"root": "/da'}):
        out = tmp_path / f"out{len(leftover)}{next(iter(leftover))}"
        (out / STATE_DIR).mkdir(parents=True)
        for name, text in leftover.items():
            (out / STATE_DIR / name).write_text(text)
        for resume in (False, True):
            _prepare_out(out, _settings(), resume=resume, overwrite=False)
            assert json.loads((out / STATE_DIR / "run.json").read_text()) == _settings()
            assert [p.name for p in (out / STATE_DIR).iterdir()] == ["run.json"]
            if not resume:  # back to the killed state for the --resume case
                (out / STATE_DIR / "run.json").write_text('{"root": "/da')


def test_out_with_user_files_is_still_refused(tmp_path):
    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    (out / STATE_DIR / ".run.json.a1b2c3d4.tmp").write_text("{")
    (out / "photo.jpg").write_bytes(b"x")
    from posegen.augment import OutputDirError

    with pytest.raises(OutputDirError, match="not empty"):
        _prepare_out(out, _settings(), resume=False, overwrite=False)
    with pytest.raises(OutputDirError, match="refusing to delete"):
        _prepare_out(out, _settings(), resume=False, overwrite=True)
    assert (out / "photo.jpg").exists()


def test_resume_removes_tmp_leftovers(tmp_path):
    out = tmp_path / "out"
    (out / STATE_DIR / "parts").mkdir(parents=True)
    (out / STATE_DIR / "run.json").write_text(json.dumps(_settings()))
    tmp1 = out / ".0000_00_pg01.jpg.k3j4h5g6.tmp"
    tmp2 = out / STATE_DIR / "parts" / ".part-000003.parquet.abcd_123.tmp"
    mine = out / "notes.tmp"
    for f in (tmp1, tmp2, mine):
        f.write_bytes(b"partial")
    _prepare_out(out, _settings(), resume=True, overwrite=False)
    assert not tmp1.exists() and not tmp2.exists() and mine.exists()


def test_outputs_have_normal_permissions(bad_run):
    _, out, _, _ = bad_run
    mask = os.umask(0)
    os.umask(mask)
    for f in (out / "manifest.parquet", out / STATE_DIR / "run.json", out / GOOD[0]):
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


# --------------------------------------------------------------------------- progress without a TTY
def test_plain_progress_lines():
    from cli.common import plain_progress

    t = [0.0]
    lines: list[str] = []
    update = plain_progress(lines.append, every_s=10, every_fraction=0.05, clock=lambda: t[0])
    for i in range(0, 1001):
        t[0] = i * 0.1  # 10 items/s
        update("poses", i, 1000)
    assert lines[0] == "poses 0/1000 0%"
    assert lines[-1].startswith("poses 1000/1000 100% 10.00 img/s done in 0:01:40")
    assert 15 <= len(lines) <= 25  # every 5 % (50 items = 5 s), not every item
    assert "ETA 0:01:30" in lines[2]  # 100/1000 done at 10/s
    # a fast stage (1000 items in 1 s): its start and end, not a line per 5 %
    fast: list[str] = []
    update = plain_progress(fast.append, every_s=10, every_fraction=0.05, clock=lambda: t[0])
    for i in range(0, 1001):
        t[0] = i * 0.001
        update("copy", i, 1000)
    assert len(fast) == 2 and fast[-1].startswith("copy 1000/1000 100%")


def test_progress_without_terminal_prints_log_lines_and_quiet_prints_none(small_data, tmp_path):
    res = _run_cli(["extract-poses", str(small_data), "--out", str(tmp_path / "p.parquet")])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "poses 2/2 100%" in res.stderr and not re.search(r"poses\s+━", res.stderr)  # log lines, no bar
    res = _run_cli(["extract-poses", str(small_data), "--out", str(tmp_path / "q.parquet"), "--quiet"])
    assert res.returncode == 0 and "poses 2/2" not in res.stderr
    assert "Feedback manager" not in res.stderr  # native log noise stays hidden


def test_default_backend_fallback_is_a_note_and_a_mixed_resume_a_clear_error(small_data, tmp_path):
    """``auto`` without the MoveNet file: one ``note:`` naming the path, BlazePose runs. Resuming that
    pose table with MoveNet: a one-line error, the file untouched."""
    out = tmp_path / "p.parquet"
    res = _run_cli(["extract-poses", str(small_data), "--out", str(out)], env={"POSEGEN_MOVENET": str(tmp_path / "gone.tflite")})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "note: MoveNet weights not found at" in res.stderr and "gone.tflite" in res.stderr
    assert "UserWarning" not in res.stderr
    assert set(read_poses(out)["backend"]) == {"blazepose-full"}
    before = out.read_bytes()
    movenet = SHARED / "weights" / "movenet" / "lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
    res = _run_cli(["extract-poses", str(small_data), "--out", str(out), "--backend", "movenet", "--weights", str(require(movenet))])
    assert res.returncode != 0
    assert "holds poses made with blazepose-full; this run uses movenet-lightning" in res.stderr
    assert "Traceback" not in res.stderr and out.read_bytes() == before


# --------------------------------------------------------------------------- CLI structure
def test_cli_modules_import_in_one_direction():
    for mod in ("augment", "repose", "common", "downstream"):
        text = (REPO / "cli" / f"{mod}.py").read_text()
        assert "from .app import" not in text and "from cli.app import" not in text, mod
    probe = textwrap.dedent(
        """
        import sys
        import cli.augment, cli.repose, cli.common
        assert "cli.app" not in sys.modules, "a command module imported cli.app"
        """
    )
    res = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- extract-poses resume
class _CountingBackend:
    """A fake pose backend: fixed keypoints (some below score 0.5), counts its calls."""

    name, weights = "fake", ""

    def __init__(self):
        self.calls = 0

    def estimate(self, image):
        self.calls += 1
        h, w = image.shape[:2]
        kp = np.zeros((17, 3), np.float32)
        kp[:, 0] = np.linspace(2, w - 3, 17)
        kp[:, 1] = np.linspace(2, h - 3, 17)
        kp[:, 2] = np.where(np.arange(17) % 3 == 0, 0.3, 0.9)
        return kp


def _market(root: Path, names: dict[str, list[str]]) -> Path:
    for folder, files in names.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            Image.new("RGB", (64, 128), (100, 150, 200)).save(root / folder / f)
    return root


@pytest.mark.parametrize("ext", ["csv", "json", "parquet"])
def test_extract_poses_resumes_nested_layouts(tmp_path, ext):
    from posegen.pose.extract import extract_poses

    root = _market(tmp_path / "m", {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "0003_c2s1_000451_01.jpg"],
                                    "query": ["0004_c1s1_000451_03.jpg"]})  # fmt: skip
    manifest = load_dataset(root)
    out = tmp_path / f"poses.{ext}"
    be = _CountingBackend()
    first = extract_poses(manifest, root, be, out=out)
    assert be.calls == 3
    again = extract_poses(manifest, root, be, out=out)
    assert be.calls == 3  # nothing re-estimated
    assert again["path"].tolist() == manifest["path"].tolist()
    if ext != "csv":  # CSV keeps only joints >= 0.5, as integers; the others keep everything
        for a, b in zip(first["keypoints"], again["keypoints"]):
            np.testing.assert_allclose(a, b, atol=1e-3)
        assert (np.stack(again["keypoints"].to_list())[..., 2] == np.float32(0.3)).any()


def test_extract_poses_csv_duplicate_names_fail_before_work(tmp_path):
    from posegen.pose.extract import extract_poses

    root = _market(tmp_path / "m", {"bounding_box_train": ["0002_c1s1_000451_03.jpg"], "query": ["0002_c1s1_000451_03.jpg"]})
    be = _CountingBackend()
    with pytest.raises(ValueError, match="0002_c1s1_000451_03.jpg"):
        extract_poses(load_dataset(root), root, be, out=tmp_path / "poses.csv")
    assert be.calls == 0 and not (tmp_path / "poses.csv").exists()


# --------------------------------------------------------------------------- sharded augment
_LAUNCH = """
import sys
sys.path.insert(0, {repo!r})
sys.argv[0] = "posegen"
from cli.app import main
main()
"""


def _sharded(tmp_path: Path, args: list[str], n: int = 2) -> subprocess.CompletedProcess:
    """``accelerate launch`` of the repository's CLI with ``n`` CPU processes."""
    script = tmp_path / "launch_posegen.py"
    script.write_text(_LAUNCH.format(repo=str(REPO)))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        str(script), *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def test_sharded_augment_matches_one_process_and_resumes(tmp_path):
    """Two CPU processes (accelerate launch) write the manifest one process writes; a shard whose
    work was lost (killed) redoes only its own batches on --resume."""
    import yaml

    from posegen.augment.run import shard_of
    from posegen.recipe import builtin_recipes

    root = tmp_path / "data"
    root.mkdir()
    names = [f"{pid:04d}_{k:02d}.jpg" for pid in range(3) for k in (0, 1, 5, 6)]
    for name in names:
        shutil.copy(require(CUHK03 / "train" / name), root / name)
    assert {shard_of(p, 2) for p in names} == {0, 1}  # both shards own images
    recipe = yaml.safe_load(builtin_recipes()["default"].read_text())
    recipe["sample"]["batch_size"] = 3  # several batches, so both shards generate
    recipe_file = tmp_path / "small-batches.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    common = ["-k", "1", "--seed", "5", "--recipe", str(recipe_file), "--quiet"]

    single = _run_cli(["augment", str(root), "--out", str(tmp_path / "one"), *common], timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    res = _sharded(tmp_path, ["augment", str(root), "--out", str(tmp_path / "two"), *common])
    assert res.returncode == 0, res.stderr[-3000:]
    one = pd.read_parquet(tmp_path / "one" / "manifest.parquet")
    two = pd.read_parquet(tmp_path / "two" / "manifest.parquet")
    pd.testing.assert_frame_equal(one, two)
    for rel in one["path"]:
        if rel:
            assert (tmp_path / "two" / rel).read_bytes() == (tmp_path / "one" / rel).read_bytes(), rel
    state = tmp_path / "two" / STATE_DIR
    parts = sorted((state / "parts").glob("part-*.parquet"))
    assert len(parts) >= 3 and len(list((state / "shards").glob("poses-*-of-0002.parquet"))) == 2

    # shard 1 killed mid-generation: its last batch and marker are gone, a write was left half done
    lost = parts[1]  # batch 1 belongs to shard 1
    rows = pd.read_parquet(lost)
    images = {r: (tmp_path / "two" / r).read_bytes() for r in rows["path"] if r}
    for r in images:
        (tmp_path / "two" / r).unlink()
    lost.unlink()
    (state / "shards" / "generate-0001-of-0002.done.json").unlink()
    (tmp_path / "two" / "manifest.parquet").unlink()
    (state / "parts" / ".part-000001.parquet.x1y2z3w4.tmp").write_bytes(b"half")
    mtimes = {p: p.stat().st_mtime_ns for p in parts if p != lost}
    res = _sharded(tmp_path, ["augment", str(root), "--out", str(tmp_path / "two"), *common, "--resume"])
    assert res.returncode == 0, res.stderr[-3000:]
    pd.testing.assert_frame_equal(one, pd.read_parquet(tmp_path / "two" / "manifest.parquet"))
    assert {r: (tmp_path / "two" / r).read_bytes() for r in images} == images
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # other batches were not redone
    assert not list((state / "parts").glob(".*.tmp"))


def test_extract_poses_shards_for_job_arrays(tmp_path):
    """`extract-poses --shard I/N` splits the images by a stable path hash; the N files merge into the full bank."""
    from posegen.pose.formats import read_poses, write_poses

    root = tmp_path / "data"
    root.mkdir()
    for name in [f"{pid:04d}_{k:02d}.jpg" for pid in range(2) for k in (0, 1, 5, 6)]:  # shards 1 1 1 0 1 0 1 1
        shutil.copy(require(CUHK03 / "train" / name), root / name)
    app = _cli_app()
    for i in range(2):
        res = runner.invoke(app, ["extract-poses", str(root), "--out", str(tmp_path / f"poses-{i}.parquet"), "--shard", f"{i}/2", "-q"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["extract-poses", str(root), "--out", str(tmp_path / "all.parquet"), "-q"])
    assert res.exit_code == 0, res.output
    parts = [read_poses(tmp_path / f"poses-{i}.parquet") for i in range(2)]
    assert all(len(p) for p in parts) and not set(parts[0]["path"]) & set(parts[1]["path"])
    # the README's merge step
    merged = pd.concat(parts, ignore_index=True).sort_values("path").reset_index(drop=True)
    write_poses(merged, tmp_path / "merged.parquet")
    full = read_poses(tmp_path / "all.parquet")
    pd.testing.assert_frame_equal(read_poses(tmp_path / "merged.parquet").drop(columns="keypoints"), full.drop(columns="keypoints"))
    for a, b in zip(read_poses(tmp_path / "merged.parquet")["keypoints"], full["keypoints"]):
        np.testing.assert_array_equal(a, b)
    res = runner.invoke(app, ["extract-poses", str(root), "--out", str(tmp_path / "x.parquet"), "--shard", "2/2"])
    assert "--shard" in _one_line_error(res)


def test_names_the_layout_skips_are_reported(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    for name in [f"{pid:04d}_{k:02d}.jpg" for pid in range(2) for k in range(10)]:
        shutil.copy(require(CUHK03 / "train" / name), root / name)
    shutil.copy(CUHK03 / "train" / GOOD[0], root / "holiday.jpg")  # not <pid>_<k>.jpg (CUHK03 takes >= 90 % matching)
    from posegen.data.layouts import skipped_images

    df = load_dataset(root)
    assert df.attrs["layout"] == "cuhk03" and skipped_images(df) == ["holiday.jpg"]
    market = _market(tmp_path / "m", {"bounding_box_test": ["-1_c1s1_000401_03.jpg", "0002_c1s1_000451_03.jpg", "x.jpg"]})
    assert skipped_images(load_dataset(market)) == ["bounding_box_test/x.jpg"]  # junk (pid -1) is by design


def test_skipped_names_are_a_note_of_the_run(bad_run):
    root, out, _, _ = bad_run
    notes = json.loads((out / STATE_DIR / "run.json").read_text())["notes"]
    assert any(n.startswith("1 image files of DIR do not follow the cuhk03 naming") and "holiday.jpg" in n for n in notes)
    assert "holiday.jpg" in (out / "report.html").read_text() and not (out / "holiday.jpg").exists()
