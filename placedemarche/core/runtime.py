"""Runtime settings shared by the core and plugins: the process's CPU share, TensorFlow's logging.

The core must not import helpers from a plugin module: a plugin may be absent or fail to
load, and the dependency would run the wrong way. Helpers that both need live here.
"""

from __future__ import annotations

import os


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ start-up chatter (CUDA probing on CPU machines); TF_CPP_MIN_LOG_LEVEL
    set by the user wins. Real failures still surface as Python exceptions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def default_threads() -> int:
    """The process's CPU share: the cores it may run on (affinity, cgroup cpusets), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
