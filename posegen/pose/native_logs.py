"""Silence the native (C++) log lines of mediapipe, absl and TFLite/LiteRT unless asked for.

mediapipe's graphs and the TFLite runtime write straight to file descriptor 2 from C++ (absl and
TFLite's own loggers), e.g. ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``,
``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`` and
``W0000 00:00:... inference_feedback_manager.cc:114] Feedback manager requires ...``; environment
variables such as ``GLOG_minloglevel`` / ``TF_CPP_MIN_LOG_LEVEL`` do not reach them.

:func:`quiet_native_logs` redirects descriptor 2 to a temporary file while native code runs and
afterwards writes back every captured line that is *not* one of those known informational
lines, so real errors (``E0000``/``F0000`` lines, Python tracebacks, anything unrecognised) still
reach the user. Backends wrap their model loading and first inference in it; native code logs
only then. :func:`set_verbose` (the CLI's ``--verbose``) turns the filtering off.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["quiet_native_logs", "set_verbose", "is_noise"]

_VERBOSE = False
_LOCK = threading.RLock()
_DEPTH = 0  # nesting depth of quiet_native_logs (under _LOCK)

#: informational native lines that are dropped (absl/glog levels I and W, TFLite's INFO lines)
_NOISE = re.compile(
    r"^(?:"
    r"[IW]\d{4} [\d:. ]+.*"  # absl / glog INFO and WARNING lines: W0000 00:00:1700000000.1 123 file.cc:1] ...
    r"|INFO: .*"  # TFLite minimal logger: INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r")$"
)


def set_verbose(verbose: bool) -> None:
    """Let native log lines through (``True``) or filter them (``False``, the default)."""
    global _VERBOSE
    _VERBOSE = bool(verbose)


def is_noise(line: str) -> bool:
    """Whether a captured stderr line is a known informational native log line."""
    return bool(_NOISE.match(line.rstrip("\r\n")))


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Capture file descriptor 2 during the block and write back all but the informational lines.

    Does nothing when :func:`set_verbose` turned verbosity on, or when descriptor 2 cannot be
    redirected (e.g. no such descriptor). Nested blocks (same thread) share the outer capture; blocks of
    different threads run one at a time.
    """
    global _DEPTH
    if _VERBOSE:
        yield
        return
    with _LOCK:
        if _DEPTH:  # nested: the outer block already captures descriptor 2
            yield
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield
            return
        with tempfile.TemporaryFile(mode="w+b") as tmp:
            os.dup2(tmp.fileno(), 2)
            _DEPTH += 1
            try:
                yield
            finally:
                _DEPTH -= 1
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines(keepends=True) if not is_noise(ln)]
                if kept:
                    sys.stderr.write("".join(kept))
                    sys.stderr.flush()
