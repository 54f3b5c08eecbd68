"""The one place that prepares TensorFlow before its first import.

TensorFlow reads its logging, backend and oneDNN switches from the environment
once, when it is imported, and fixes its thread pools at the first op. So every
command calls `configure` before anything imports Keras, and nothing else in
`training/` sets these variables.
"""

from __future__ import annotations

import os
import sys

QUIET_ENVIRONMENT = {
    "KERAS_BACKEND": "tensorflow",
    # 2 hides INFO and WARNING lines from TensorFlow's C++ side.
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def available_cores() -> int:
    """Cores this process may run on, which in a container is fewer than the host has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _import_tensorflow_silently() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TensorFlow's C++ side announces oneDNN on stderr during import, before any
    log level applies; the only switch that silences it (TF_ENABLE_ONEDNN_OPTS=0)
    also makes convolutions about three times slower on CPU. An import error
    still surfaces: its exception is raised after stderr is restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def configure(
    *, threads: int | None = None, verbose: bool = False, seed: int | None = None
) -> None:
    """Quiet TensorFlow, size its thread pools, and seed every generator.

    `threads` defaults to the cores present: on a shared 2-core machine letting
    TensorFlow guess from the host's core count oversubscribes it badly. Ops run
    on `threads` intra-op threads and at most two concurrent ops, which suits
    the small sequential graphs trained here.
    """
    if "tensorflow" not in sys.modules:
        for key, value in QUIET_ENVIRONMENT.items():
            if verbose and key == "TF_CPP_MIN_LOG_LEVEL":
                continue
            os.environ.setdefault(key, value)
        if verbose:
            import tensorflow as tf
        else:
            _import_tensorflow_silently()

    import tensorflow as tf

    count = threads if threads and threads > 0 else available_cores()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(count)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, count))
    except RuntimeError:
        # Already initialised by an earlier call in this process (tests); keep its pools.
        pass
    if not verbose:
        tf.get_logger().setLevel("ERROR")
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)
