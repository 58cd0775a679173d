"""Small I/O helpers shared by every stage: atomic writes and deterministic seeds.

Every output file posegen writes goes through :func:`atomic_write`: the content is written to a
temporary file in the destination folder and moved into place with :func:`os.replace`, so a reader
(or a resumed run) never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_to_parquet",
    "atomic_save_image",
    "stable_seed",
    "shard_of",
    "shared_path",
]


def shared_path(relative: str, env_var: str) -> Path:
    """Where a user-supplied weights file or folder is looked for when no path is given.

    ``$<env_var>`` when set (``~`` expanded); else ``../shared/<relative>`` beside the repository
    holding this package (a source checkout), or beside the current directory (an install run from
    the repository root): the first of the two that exists, else the first. The path is returned
    whether or not it exists; loaders raise ``FileNotFoundError`` naming it (nothing is downloaded).

    Args:
        relative: path below ``shared/``, e.g. ``"weights/taef2"``.
        env_var: environment variable that overrides the lookup, e.g. ``"POSEGEN_TAEF2_DIR"``.
    """
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    candidates = [base.parent / "shared" / relative for base in (repo, Path.cwd().resolve())]
    return next((c for c in candidates if c.exists()), candidates[0])


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically.

    Args:
        path: destination file; its parent folders are created.
        writer: called with a temporary path in the same folder; it must write the whole content
            there. The temporary file is renamed onto ``path`` only if ``writer`` returns normally.

    Returns:
        The destination path.

    Raises:
        Whatever ``writer`` raises; the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write raw bytes to ``path`` (see :func:`atomic_write`)."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text to ``path`` (see :func:`atomic_write`)."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (see :func:`atomic_write`)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_to_parquet(df, path: str | os.PathLike) -> Path:
    """Atomically write a pandas DataFrame as Parquet (pyarrow engine, no index)."""
    return atomic_write(path, lambda p: df.to_parquet(p, index=False, engine="pyarrow"))


def atomic_save_image(image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Atomically save a ``PIL.Image.Image``; the format follows ``path``'s extension.

    JPEG is written with quality 95 unless ``save_kwargs`` says otherwise.
    """
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}.get(
        path.suffix.lower(), "PNG"
    )
    if fmt == "JPEG":
        save_kwargs.setdefault("quality", 95)
    return atomic_write(path, lambda p: image.save(p, format=fmt, **save_kwargs))


def stable_seed(*parts: Any) -> int:
    """A deterministic 63-bit seed from any printable parts (e.g. ``(seed, "0001_03.jpg", k)``).

    Python's ``hash`` is salted per process; this uses BLAKE2b of the parts' ``repr`` so the same
    inputs give the same seed in every process and on every machine.
    """
    h = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def shard_of(path: str, num_shards: int) -> int:
    """The shard (``0 .. num_shards - 1``) of an image path, by a stable hash of the path string.

    The same path gives the same shard in every process and on every machine (:func:`stable_seed`);
    pass the path relative to the dataset root, so that every machine agrees whatever the mount.
    """
    return stable_seed("posegen-shard", str(path)) % int(num_shards)
