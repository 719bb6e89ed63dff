"""Atomic, pickle-free checkpoints.

A checkpoint is a ``torch.save`` file holding only plain types (dict, list, tuple, str, int, float, bool,
None) and tensors, so it loads with ``torch.load(weights_only=True)``: nothing in it can import or call code.
Anything else (a pickled object from a foreign or tampered file) is refused with :class:`CheckpointError`.

Writes are atomic (temp file in the same folder, fsync, ``os.replace``, fsync of the folder): a crash or
Ctrl-C leaves either the old file or the new one, never half a file.

RNG states are stored as tensors / plain numbers (:func:`capture_rng` / :func:`restore_rng`): torch's CPU
generator (and CUDA's when used), numpy's legacy global generator and Python's ``random``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CheckpointError
from msclr.files import atomic_write_bytes

FORMAT = "msclr-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state: Mapping[str, Any], *, kind: str) -> Path:
    """Save ``state`` (plain types and tensors only) atomically with a format header.

    Args:
        path: destination file (``.pt``).
        state: the payload; must load with ``weights_only=True``.
        kind: what it is (``"pretrain"``, ``"model"``, ...), checked by :func:`load_checkpoint`.
    """
    import io

    import torch

    payload = {"format": FORMAT, "version": VERSION, "kind": kind, **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_checkpoint(path: str | Path, *, kind: str | None = None, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: missing file, unreadable file, a pickle payload (refused: it could run code),
            a foreign file, or a checkpoint of another ``kind``.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: check the run folder, or start without --resume.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled Python objects, which could run code "
            f"({str(err).splitlines()[0][:200]}). Only load checkpoints msclr wrote; delete or re-create this file."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path} ({err}): the file is truncated or not a "
                              "PyTorch checkpoint; delete it to start over.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an msclr checkpoint (no '{FORMAT}' header).")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer msclr (checkpoint version {state.get('version')}); "
                              "upgrade msclr.")
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(f"{path} is a {state.get('kind')!r} checkpoint, expected {kind!r}.")
    return state


# ---------------------------------------------------------------------- RNG
def capture_rng(*, cuda: bool = False) -> dict[str, Any]:
    """Global RNG states (torch CPU [+ CUDA], numpy legacy, python ``random``) as tensors and plain types."""
    import torch

    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if cuda and torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    import torch

    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


__all__ = ["FORMAT", "VERSION", "save_checkpoint", "load_checkpoint",
           "capture_rng", "restore_rng"]
