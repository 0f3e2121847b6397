"""Settings of the native runtimes plugins start (TensorFlow's logging), shared by the core and plugins.

The core must not import helpers from a plugin module: a plugin may be absent or fail to
load, and the dependency would run the wrong way. Helpers that both need live here.
"""

from __future__ import annotations

import os


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ start-up chatter (CUDA probing on CPU machines); TF_CPP_MIN_LOG_LEVEL
    set by the user wins. Real failures still surface as Python exceptions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
