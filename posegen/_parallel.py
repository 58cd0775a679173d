"""Run independent pieces of work on several CPU cores of one process, with threads.

``augment``'s per-batch work (re-posing, decoding, the filter, encoding and writing the images)
and its per-source target choice are independent from one item to the next. The torch parts
already use every core (intra-op threads); the rest (the pose backend, NumPy scoring, PNG/JPEG
encoding) runs on one core, about a quarter of a generated image's time on one thread: with one
batch at a time that part bounds the throughput however many cores there are (Amdahl). Several
items at once, each in its own thread with its share of torch's threads, keep every core busy
through both kinds of work: the heavy calls (torch, ONNX Runtime, LiteRT, NumPy, Pillow's codecs)
release the GIL. On the 2-core development machine the gain is small (the README main job's
generation 280 s against 291 s with one batch at a time, ``benchmarks/main_job_speed.py``): torch's
two threads already kept both cores nearly busy. Threads rather than processes: no second copy of
the models, no start-up cost, and the results come back in memory. A library object that is not
thread-safe (a LiteRT interpreter) must be wrapped by the caller (see :class:`Serialized`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["default_workers", "thread_map", "Serialized"]

T = TypeVar("T")
R = TypeVar("R")

#: Most threads :func:`default_workers` proposes (each holds one batch in memory).
MAX_DEFAULT_WORKERS = 8


def default_workers(device: str = "cpu") -> int:
    """Items to work on at once by default: on the CPU, torch's intra-op thread count (the cores
    torch would use, ``OMP_NUM_THREADS`` when set), at most :data:`MAX_DEFAULT_WORKERS`; on a GPU, 1
    (the device already runs a batch in parallel)."""
    if not str(device).startswith("cpu"):
        return 1
    import torch

    return max(1, min(int(torch.get_num_threads()), MAX_DEFAULT_WORKERS))


def thread_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[tuple[int, R]]:
    """Yield ``(i, fn(items[i]))`` for every item, ``workers`` at a time, in completion order.

    With ``workers`` <= 1 (or one item) the items run in order in the calling thread. Otherwise each
    runs in a thread of a :class:`concurrent.futures.ThreadPoolExecutor` whose threads share the
    caller's torch intra-op threads: ``torch.get_num_threads() // workers`` each, at least one
    (``torch.set_num_threads`` in each thread: OpenMP's setting is per thread). An exception in
    ``fn`` is raised here once its item is reached; the items not started yet are cancelled and the
    running ones finish first (as when the caller stops iterating, e.g. on Ctrl-C), so no item is
    left half done by this function.

    Args:
        fn: the work of one item; it must be safe to run in several threads at once.
        items: the items (consumed into a list first).
        workers: most items at once.
    """
    todo = list(items)
    if int(workers) <= 1 or len(todo) <= 1:
        for i, item in enumerate(todo):
            yield i, fn(item)
        return
    import torch

    each = max(1, torch.get_num_threads() // int(workers))
    ex = ThreadPoolExecutor(max_workers=int(workers), initializer=torch.set_num_threads, initargs=(each,),
                            thread_name_prefix="posegen")  # fmt: skip
    try:
        futures = {ex.submit(fn, item): i for i, item in enumerate(todo)}
        for f in as_completed(futures):
            yield futures[f], f.result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


class Serialized:
    """A proxy that lets one thread at a time call the wrapped object's methods.

    For library objects that are not thread-safe (a LiteRT ``Interpreter`` behind a pose backend
    or the person segmenter) used from :func:`thread_map`'s threads. Attributes that are not
    callable are read through unchanged (e.g. a pose backend's ``name``).
    """

    def __init__(self, obj):
        self._obj = obj
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr
        lock = self._lock

        def locked(*args, **kwargs):
            with lock:
                return attr(*args, **kwargs)

        return locked

