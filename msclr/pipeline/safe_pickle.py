"""A restricted unpickler for plain-data pickles (pyskl / mmaction2 annotation files).

``pickle.load`` runs whatever a file asks for: a downloaded "annotation" pickle can call
``os.system`` as it loads.  :func:`safe_load` admits only the globals that plain data needs:

- containers and scalars: dict, list, tuple, str, int, float, bool, None and bytes need no
  global at all; ``set``, ``frozenset``, ``bytearray``, ``complex``, ``slice`` and
  ``collections.OrderedDict`` are admitted by name;
- ``_codecs.encode``: protocol-2 pickles (mmcv's default) spell ``bytes`` as
  ``_codecs.encode(text, "latin1")``;
- numpy arrays, scalars and dtypes: ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy.core.multiarray._reconstruct``, ``numpy.core.multiarray.scalar`` and (protocol 5)
  ``numpy.core.numeric._frombuffer``, under both the numpy 1 (``numpy.core``) and numpy 2
  (``numpy._core``) module names, whichever numpy is installed.

Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ``posix.system``,
any class) raises :class:`~msclr.errors.UnsafePickleError` when the unpickler meets the
reference, i.e. before anything it names can be called.  Persistent IDs are refused too.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from msclr.errors import ImportFormatError, UnsafePickleError


def _numpy_core(submodule: str, name: str) -> Callable[[], Any]:
    """Resolve ``numpy[._]core.<submodule>.<name>`` on whichever numpy is installed."""

    def resolve() -> Any:
        import importlib

        try:
            module = importlib.import_module(f"numpy._core.{submodule}")
        except ImportError:  # numpy 1.x
            module = importlib.import_module(f"numpy.core.{submodule}")
        return getattr(module, name)

    return resolve


def _numpy(name: str) -> Callable[[], Any]:
    def resolve() -> Any:
        import numpy

        return getattr(numpy, name)

    return resolve


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("builtins", "set"): _const(set),
    ("builtins", "frozenset"): _const(frozenset),
    ("builtins", "bytearray"): _const(bytearray),
    ("builtins", "complex"): _const(complex),
    ("builtins", "slice"): _const(slice),
    ("collections", "OrderedDict"): _const(collections.OrderedDict),
    ("_codecs", "encode"): lambda: __import__("_codecs").encode,
    ("numpy", "ndarray"): _numpy("ndarray"),
    ("numpy", "dtype"): _numpy("dtype"),
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _numpy_core("multiarray", "_reconstruct")
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _numpy_core("multiarray", "scalar")
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _numpy_core("numeric", "_frombuffer")

#: The admitted globals, as ``module.name`` strings.
ALLOWED_GLOBALS: frozenset[str] = frozenset(f"{m}.{n}" for m, n in _ALLOWED)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file, fix_imports=True)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        # Python 2 names (``__builtin__.set`` in protocol-2 pickles), mapped as the default
        # find_class does; the mapping only renames modules that do not exist in Python 3.
        if key in _compat_pickle.NAME_MAPPING:
            key = _compat_pickle.NAME_MAPPING[key]
        elif module in _compat_pickle.IMPORT_MAPPING:
            key = (_compat_pickle.IMPORT_MAPPING[module], name)
        resolve = _ALLOWED.get(key)
        if resolve is None:
            raise UnsafePickleError(
                f"{self.source}: refused to unpickle: it asks for the global `{module}.{name}`, which is "
                "not plain data. msclr only loads plain annotation pickles (dicts, lists, numbers, strings, "
                "numpy arrays); this file is not one and could run code when opened with pickle.load. "
                "If you trust its origin, convert it to a plain pyskl annotation pickle first."
            )
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self.source}: refused to unpickle: it uses persistent IDs (e.g. a torch.save file), so it "
            "is not a plain annotation pickle. Export the annotations as a plain pickle."
        )


def safe_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only plain data (see the module docstring).

    Raises:
        UnsafePickleError: the pickle refers to a global outside the allowlist.
        ImportFormatError: the data is not a complete pickle.
    """
    return _load(io.BytesIO(data), source)


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` admitting only plain data (see :func:`safe_loads`)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return _load(handle, str(path))
    except OSError as err:
        raise ImportFormatError(f"cannot read {path}: {err.strerror or err}. Check the path.") from None


def _load(handle: BinaryIO, source: str) -> Any:
    try:
        return _RestrictedUnpickler(handle, source).load()
    except ImportFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, OverflowError, MemoryError) as err:
        raise ImportFormatError(
            f"{source}: not a readable pickle ({type(err).__name__}: {err}). The file is truncated, "
            "corrupt or not a pickle: download or write it again."
        ) from None
