"""Which extractor code may import TensorFlow, and how quietly.

Only the MeTRAbs backend imports TensorFlow (:func:`import_tensorflow`).  By default it is quiet:

- ``TF_CPP_MIN_LOG_LEVEL`` is set to ``"3"`` before the first import (unless the environment
  already sets it), which hides TensorFlow's C++ INFO / WARNING / ERROR lines;
- the lines TensorFlow 2.16+ writes through absl before its logging is initialised (the
  "Unable to register cuDNN factory" family), which ignore that variable, are captured during the
  first import and dropped (replayed on stderr if the import fails);
- the ``tensorflow`` and ``absl`` Python loggers are set to ERROR, and Python warnings raised while
  importing TensorFlow or tensorflow_hub (e.g. tensorflow_hub's ``pkg_resources`` deprecation) are
  ignored.

``verbose=True`` leaves all of that alone (TensorFlow's own defaults).  The C++ level is read once,
when TensorFlow is first imported, so only the first call in a process decides it.

MediaPipe 0.10.21 imports TensorFlow, when it is installed, only for its documentation decorators;
:func:`tensorflow_blocked` makes that optional import fail so that MediaPipe extraction never loads
TensorFlow (about 2 s and its log lines saved).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from msclr.errors import ExtractionError

QUIET_CPP_LOG_LEVEL = "3"
"""``TF_CPP_MIN_LOG_LEVEL`` set by default: 3 hides INFO, WARNING and ERROR lines of the C++ core."""

PYTHON_LOGGERS = ("tensorflow", "absl")
"""Python loggers set to ERROR in quiet mode (back to NOTSET, i.e. inherited, in verbose mode)."""


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the duration; replay it if the body raises."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read()[-20000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def set_python_log_levels(verbose: bool) -> None:
    """``tensorflow`` / ``absl`` Python loggers: ERROR when quiet, inherited when verbose."""
    for name in PYTHON_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


@contextlib.contextmanager
def python_warnings_quiet(verbose: bool) -> Iterator[None]:
    """Ignore Python warnings inside the block unless ``verbose`` (TensorFlow / tensorflow_hub import
    and model loading)."""
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        yield


def import_tensorflow(*, verbose: bool = False) -> Any:
    """Import TensorFlow (quietly unless ``verbose``; see the module docstring) and return the module.

    Raises:
        ExtractionError: TensorFlow is not installed.
    """
    first = "tensorflow" not in sys.modules
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_CPP_LOG_LEVEL)
    try:
        with python_warnings_quiet(verbose), contextlib.ExitStack() as stack:
            if first and not verbose:
                stack.enter_context(_native_stderr_captured())
            import tensorflow as tf
    except ImportError as err:  # pragma: no cover - tensorflow is a dependency
        raise ExtractionError(f"the MeTRAbs extractor needs TensorFlow: {err}; pip install tensorflow") from None
    set_python_log_levels(verbose)
    return tf


def import_tensorflow_hub(*, verbose: bool = False) -> Any:
    """Import tensorflow_hub after :func:`import_tensorflow`; its import warnings are ignored unless ``verbose``.

    Raises:
        ImportError: tensorflow_hub (or tf_keras) is not installed.
    """
    import_tensorflow(verbose=verbose)
    with python_warnings_quiet(verbose):
        import tensorflow_hub as hub
    return hub


@contextlib.contextmanager
def tensorflow_blocked() -> Iterator[None]:
    """Make ``import tensorflow`` fail with ModuleNotFoundError inside the block, unless TensorFlow
    is already loaded (then nothing changes).  Modules that import it optionally then skip it."""
    if "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]


__all__ = ["PYTHON_LOGGERS", "QUIET_CPP_LOG_LEVEL", "import_tensorflow", "import_tensorflow_hub",
           "python_warnings_quiet", "set_python_log_levels", "tensorflow_blocked"]
