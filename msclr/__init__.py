"""msclr: raw videos of people to action labels with MS-CLR (arXiv 2508.14889).

The public API, each name imported on first use (importing :mod:`msclr` never imports TensorFlow,
PyTorch or h5py)::

    import msclr
    cache = msclr.Cache("cache/")                        # an HDF5 skeleton cache (msclr extract / import)
    metrics = msclr.train_run("cache/", "run/", config)  # pretraining + linear evaluation (msclr train)
    run = msclr.load_run("run/")                         # a finished run, ready for inference
    prediction = msclr.predict_video("clip.mp4", "run/") # named actions for a clip (msclr predict)

Packages: :mod:`msclr.skeletons` (the skeleton registry), :mod:`msclr.extractors` (video decoding and
pose backends), :mod:`msclr.models` (pure ``nn.Module`` code), :mod:`msclr.pipeline` (the commands, the
cache, the datasets and the training loops); :mod:`msclr.console` prints, :mod:`msclr.errors` says what
went wrong.  ``docs/architecture.md`` draws the map.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "Cache": "msclr.pipeline.cache",
    "load_run": "msclr.pipeline.trained",
    "predict_video": "msclr.pipeline.predict",
    "predict_skeletons": "msclr.pipeline.predict",
    "predict_stored": "msclr.pipeline.predict",
    "train_run": "msclr.pipeline.train",
    "resolve_config": "msclr.pipeline.config",
    "get_skeleton": "msclr.skeletons",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'msclr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
