"""Training state that must survive a resume: the global random generators.

RNG states are stored as tensors / plain numbers (:func:`capture_rng` / :func:`restore_rng`) so they travel
inside a pickle-free checkpoint (:func:`msclr.files.save_checkpoint`): torch's CPU generator (and CUDA's when
used), numpy's legacy global generator and Python's ``random``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np


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


__all__ = ["capture_rng", "restore_rng"]
