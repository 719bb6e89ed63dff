"""Shared pytest fixtures.

Real data lives outside the repository (research-use): ``$MSCLR_TEST_DATA`` or
``<repo>/../shared/data``.  Tests that need it skip cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Fuzz tests draw a fixed, reproducible sequence of examples by default, so CI cannot turn red (or hang) on a
# new random example; MSCLR_FUZZ_RANDOM=1 draws fresh ones, for fuzzing sessions by hand (with
# MSCLR_FUZZ_EXAMPLES=1000).  A random session once found bit-flipped cache segments that sent libhdf5 into an
# endless loop; segment seals fixed that (docs/reliability.md, "Hangs inside libhdf5").
settings.register_profile("msclr", derandomize=os.environ.get("MSCLR_FUZZ_RANDOM", "") in ("", "0"))
settings.load_profile("msclr")

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    non-dark frame.  Built once per session (a few seconds of TensorFlow); skips without TensorFlow.
    Returns its ``StandinInfo`` (``.path`` is the model folder to pass as ``--pose-model``)."""
    pytest.importorskip("tensorflow")
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
