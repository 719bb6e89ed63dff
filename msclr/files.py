"""Crash-safe files: atomic writes and pickle-free checkpoints.

Atomic file writes: write under a temporary name in the same folder, fsync, ``os.replace``, fsync the folder.
A reader never sees a partly written file, and a crash leaves either the old file or the new one (plus, at
worst, a temporary file that the next writer may remove).  The one implementation used by the cache's
manifests, checkpoints, run files, reports and pyskl exports.

A checkpoint is a ``torch.save`` file holding only plain types (dict, list, tuple, str, int, float, bool,
None) and tensors, so it loads with ``torch.load(weights_only=True)``: nothing in it can import or call code.
Anything else (a pickled object from a foreign or tampered file) is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from msclr.errors import CheckpointError


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a rename inside it is durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------- test-only pause points
PAUSE_ENV = "MSCLR_TEST_PAUSE"
PAUSE_MARKER_ENV = "MSCLR_TEST_PAUSE_MARKER"
_pause_hits: dict[str, int] = {}


def pause_point(name: str) -> None:
    """Test hook (``tests/test_train_kill.py``, ``tests/test_extract_cli.py``), inert unless ``$MSCLR_TEST_PAUSE``
    is set.

    ``MSCLR_TEST_PAUSE=NAME[#N]`` makes the process stop for good the N-th time (default: the first) it passes
    the point ``NAME``: it creates the file ``$MSCLR_TEST_PAUSE_MARKER`` (when set) and sleeps until it is
    killed, so a test can SIGKILL it at an exact, reproducible point.  The points:

    - ``replace:FILE``: in :func:`atomic_open`, when the temporary file of ``FILE`` (a bare file name such as
      ``last.pt``) is written and fsynced, just before ``os.replace`` puts it in place;
    - ``step:EPOCH:STEP``: in pretraining, right after optimiser step ``STEP`` (1-based) of ``EPOCH``;
    - ``segment-written``: in :class:`msclr.pipeline.cache.CacheWriter`, when a segment's ``*.partial`` file is
      written and fsynced, just before ``os.replace`` commits it under its ``*.h5`` name;
    - ``commit``: in the same writer, right after a segment is committed (renamed and its folder fsynced);
    - ``model-load``: in ``msclr extract`` (:mod:`msclr.pipeline.extract`), right before the pose model is
      built (loaded) for the first video to extract: the cache exists, nothing of this run is committed yet;
    - ``extract-batch``: in ``msclr extract``, right after the extractor processed one frame batch (counted
      over the whole run, every video).
    """
    want = os.environ.get(PAUSE_ENV)
    if not want:
        return
    target, _, nth = want.partition("#")
    if name != target:
        return
    _pause_hits[name] = _pause_hits.get(name, 0) + 1
    if _pause_hits[name] != int(nth or 1):
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        Path(marker).touch()
    while True:  # until killed
        time.sleep(60)


def default_tmp_name(final: Path) -> Path:
    """``.NAME.PID.partial`` beside ``final``."""
    return final.with_name(f".{final.name}.{os.getpid()}.partial")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, tmp: Path | None = None,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open ``tmp`` (default :func:`default_tmp_name`) for writing; on a clean exit flush, fsync and rename it
    onto ``path``; on any exception remove it and re-raise.  Creates ``path``'s folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp or default_tmp_name(path)
    try:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        pause_point(f"replace:{path.name}")  # test hook, inert unless $MSCLR_TEST_PAUSE is set
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, tmp: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", tmp=tmp) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str, *, tmp: Path | None = None) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", tmp=tmp, encoding="utf-8") as handle:
        handle.write(text)


# ------------------------------------------------------- pickle-free checkpoints
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


# ------------------------------------------------------- foreign weights
def load_state_file(path: str | Path) -> dict[str, Any]:
    """Tensors of a checkpoint file, read safely (``weights_only=True``).

    Accepts a bare state dict or a dict holding one under ``state_dict`` / ``model`` / ``model_state``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give the path of a .pt / .pth file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError ...
        raise CheckpointError(
            f"cannot read {path} as a weights-only PyTorch checkpoint ({type(err).__name__}: {err}); msclr never "
            "unpickles arbitrary objects - re-save the state dict alone with torch.save(model.state_dict(), path)"
        ) from None
    return _tensor_dict(obj, str(path))


def _tensor_dict(obj: Any, origin: str) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state"):
            if key in obj and isinstance(obj[key], Mapping):
                return _tensor_dict(obj[key], origin)
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and _is_tensor(v)}
        if tensors:
            return tensors
    raise CheckpointError(f"{origin} holds no state dict (a mapping of names to tensors)")


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def load_reference_encoder(path: str | Path, encoder: Any, **kwargs: Any) -> Any:
    """Read a reference checkpoint file (safely) and load it into ``encoder``; returns the encoder.

    Keyword arguments are those of :func:`msclr.models.convert.convert_encoder_state_dict`.
    """
    from msclr.models.convert import convert_encoder_state_dict

    converted = convert_encoder_state_dict(load_state_file(path), encoder, **kwargs)
    encoder.load_state_dict(converted)
    return encoder
