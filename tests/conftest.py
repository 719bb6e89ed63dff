"""Shared pytest fixtures.

Real data lives outside the repository (research-use): ``$MSCLR_TEST_DATA`` or
``<repo>/../shared/data``.  Tests that need it skip cleanly when it is absent.

TensorFlow and MediaPipe tests get their module through :func:`require_module`, never a bare
``pytest.importorskip``: under ``CI=true`` (``.ci/run``) a stack that does not import fails the run instead of
turning every extraction test into a skip.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest
from hypothesis import settings

# Fuzz tests draw a fixed, reproducible sequence of examples by default, so CI cannot turn red (or hang) on a
# new random example; MSCLR_FUZZ_RANDOM=1 draws fresh ones, for fuzzing sessions by hand (with
# MSCLR_FUZZ_EXAMPLES=1000).  A random session once found bit-flipped cache segments that sent libhdf5 into an
# endless loop; segment seals fixed that (docs/reliability.md, "Hangs inside libhdf5").
settings.register_profile("msclr", derandomize=os.environ.get("MSCLR_FUZZ_RANDOM", "") in ("", "0"))
settings.load_profile("msclr")

REPO_ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True when the suite runs in CI (``.ci/run`` sets ``CI=true``), where a missing test dependency is a failure."""
    return os.environ.get("CI") == "true"


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip the test (or module) with ``reason``; under ``CI=true`` fail it instead, since CI installs everything
    the suite needs and a skip there would hide a broken install behind a green run."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this must not be skipped in CI)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """Import and return ``name`` (e.g. ``"tensorflow"``, ``"mediapipe"``), like ``pytest.importorskip``, except
    that a failed import fails the test (or, at module level, the collection) under ``CI=true``."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        reason = f"could not import {name}: {type(err).__name__}: {err}"
    skip_or_fail_in_ci(reason)  # outside the except block: the report shows the reason, not a chained traceback


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it is not available."""
    env = os.environ.get("MSCLR_TEST_DATA")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared data folder; skips the test when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared test data not found (set MSCLR_TEST_DATA or place it at ../shared/data)")
    return path


@pytest.fixture(scope="session")
def pixel_standin(tmp_path_factory: pytest.TempPathFactory):
    """The MeTRAbs stand-in SavedModel (``tests/metrabs_standin.py``) in pixel mode: two people in every
    non-dark frame.  Built once per session (a few seconds of TensorFlow); skips without TensorFlow (fails
    under ``CI=true``).  Returns its ``StandinInfo`` (``.path`` is the model folder to pass as ``--pose-model``)."""
    require_module("tensorflow")
    from metrabs_standin import build_standin

    return build_standin(tmp_path_factory.mktemp("standin") / "model")


def require_file(base: Path, relative: str) -> Path:
    """``base / relative`` or skip the test naming the missing file."""
    path = base / relative
    if not path.is_file():
        pytest.skip(f"shared test file {relative} not found under {base}")
    return path


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    """One torch thread: the tests use tiny tensors, where 2 threads on a busy 2-core machine were up to 100x slower."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)
