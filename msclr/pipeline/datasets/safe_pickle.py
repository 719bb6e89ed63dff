"""A restricted unpickler for plain-data pickles (pyskl / mmaction2 annotation files).

``pickle.load`` runs whatever a file asks for: a downloaded "annotation" pickle can call
``os.system`` as it loads.  :func:`safe_load` admits only the globals that plain data needs:

- containers and scalars: dict, list, tuple, str, int, float, bool, None and bytes need no
  global at all; ``set``, ``frozenset``, ``bytearray``, ``complex`` and
  ``collections.OrderedDict`` are admitted by name;
- ``_codecs.encode`` and ``bytes``: protocol 0-2 pickles (mmcv's default is 2) spell ``bytes``
  as ``_codecs.encode(text, "latin1")`` and ``b""`` as ``bytes()``;
- numpy arrays, scalars and dtypes: ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy.core.multiarray._reconstruct``, ``numpy.core.multiarray.scalar`` and (protocol 5)
  ``numpy.core.numeric._frombuffer``, under both the numpy 1 (``numpy.core``) and numpy 2
  (``numpy._core``) module names, whichever numpy is installed.

Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ``posix.system``,
any class) raises :class:`~msclr.errors.UnsafePickleError` when the unpickler meets the
reference, i.e. before anything it names can be called.  Persistent IDs are refused too.

Admitted globals can still crash the interpreter when a hostile file calls them in ways no
pickler writes, so more rules apply (found by ``tests/test_fuzz_pickle.py``):

- ``numpy.ndarray`` may only be the class argument of ``_reconstruct`` (how numpy pickles an
  array).  Called directly, ``ndarray(shape, object, buffer)`` reads PyObject pointers out of the
  file's bytes (a segfault, or worse); such a call raises :class:`UnsafePickleError`.
- ``bytes`` and ``bytearray`` may only be called on text or bytes (``bytearray(10**11)`` is a memory bomb),
  ``_codecs.encode`` only with ``"latin1"`` (nested ``hex`` encodings double the data each time),
  and ``_reconstruct`` always builds numpy's empty placeholder (the data comes in ``__setstate__``).
- ``slice`` is not admitted (a slice nested a million deep segfaults when freed; annotation
  files hold no slices).
- Before unpickling, the opcodes are scanned (linearly, nothing built) and a pickle whose tuples
  nest deeper than :data:`MAX_TUPLE_DEPTH` is refused: CPython hashes a tuple recursively in C
  without a depth check, so a dict key made of a few million nested tuples (one byte each in a
  pickle) overflows the C stack.  Lists, dicts and sets need no limit: they are unhashable and
  are freed iteratively.

Any other failure while unpickling (including ``RecursionError`` and numpy's ``RuntimeError``)
becomes :class:`~msclr.errors.ImportFormatError`.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import struct
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


class _NdarrayClass:
    """What ``numpy.ndarray`` resolves to: a token for ``_reconstruct``, refused when called."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(
            "refused to unpickle: it calls numpy.ndarray(...) directly, which no pickler writes and which "
            "can read memory addresses out of the file (object arrays over a buffer); this is not a plain "
            "annotation pickle. Re-export the arrays with numpy / pickle from a trusted source."
        )

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayClass()


def _latin1_encode(text: Any, encoding: Any = "utf-8", *rest: Any) -> Any:
    """``_codecs.encode`` as protocol 0-2 picklers call it: ``encode(text, "latin1")`` spells bytes."""
    if encoding not in ("latin1", "latin-1", "iso-8859-1") or rest:
        raise UnsafePickleError(
            f"refused to unpickle: it calls _codecs.encode with codec {str(encoding)[:40]!r}; picklers only use "
            "'latin1' (other codecs can expand data without bound); this is not a plain annotation pickle."
        )
    import _codecs

    return _codecs.encode(text, "latin1")


def _no_size_constructor(kind: type, protocols: str) -> Callable[..., Any]:
    """``bytes`` / ``bytearray`` as picklers call them (from text or bytes, ``protocols``), never with a size:
    ``bytes(n)`` allocates n bytes, a memory bomb that no pickler writes."""

    def construct(*args: Any) -> Any:
        if args and not isinstance(args[0], str | bytes):
            raise UnsafePickleError(
                f"refused to unpickle: it calls {kind.__name__}({type(args[0]).__name__}), which no pickler "
                f"writes ({kind.__name__}(n) allocates n bytes, a memory bomb); this is not a plain annotation pickle."
            )
        return kind(*args)

    construct.__doc__ = f"``{kind.__name__}`` as picklers call it ({protocols}), never with a size."
    return construct


_bytes = _no_size_constructor(bytes, "protocols 0-2: bytes() spells b''")
_bytearray = _no_size_constructor(bytearray, "from text in protocols 0-2, from bytes in 3-4")


def _safe_reconstruct() -> Callable[..., Any]:
    """``_reconstruct(numpy.ndarray, shape, typecode)``: numpy's array constructor for pickles."""
    reconstruct = _numpy_core("multiarray", "_reconstruct")()

    def safe(subtype: Any, shape: Any, typecode: Any) -> Any:
        if subtype is not _NDARRAY:
            raise UnsafePickleError(
                f"refused to unpickle: numpy's _reconstruct is asked for {type(subtype).__name__} instead "
                "of numpy.ndarray; this is not a plain annotation pickle."
            )
        import numpy

        # numpy always pickles an empty placeholder, _reconstruct(ndarray, (0,), b"b"), and sets the
        # real shape, dtype and data in __setstate__; a larger placeholder would only allocate (an
        # object array of 2**31 Nones is a memory bomb), so the shape is ignored.
        del shape
        return reconstruct(numpy.ndarray, (0,), typecode)

    return safe


_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("builtins", "set"): _const(set),
    ("builtins", "frozenset"): _const(frozenset),
    ("builtins", "bytearray"): _const(_bytearray),
    ("builtins", "bytes"): _const(_bytes),
    ("builtins", "complex"): _const(complex),
    ("collections", "OrderedDict"): _const(collections.OrderedDict),
    ("_codecs", "encode"): _const(_latin1_encode),
    ("numpy", "ndarray"): _const(_NDARRAY),
    ("numpy", "dtype"): _numpy("dtype"),
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _safe_reconstruct
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


MAX_TUPLE_DEPTH = 1000
"""Deepest tuple nesting admitted (plain data nests tuples a few levels; the C stack takes ~10^5)."""

# Opcode table for the nesting scan: code -> (argument kind, size, pops to mark, items popped
# below the mark (or without one), items pushed, special handling).
_FIXED, _LEN1, _LEN4S, _LEN4U, _LEN8U, _LINES = range(6)
_GENERIC, _TUPLE, _MARK, _PUT, _MEMOIZE, _GET, _DUP, _POP, _STOP = range(9)
_SPECIAL = {
    "EMPTY_TUPLE": _TUPLE, "TUPLE": _TUPLE, "TUPLE1": _TUPLE, "TUPLE2": _TUPLE, "TUPLE3": _TUPLE,
    "MARK": _MARK, "PUT": _PUT, "BINPUT": _PUT, "LONG_BINPUT": _PUT, "MEMOIZE": _MEMOIZE,
    "GET": _GET, "BINGET": _GET, "LONG_BINGET": _GET, "DUP": _DUP, "POP": _POP, "STOP": _STOP,
}


def _opcode_table() -> list[tuple[int, int, bool, int, int, int] | None]:
    import pickletools

    kinds = {pickletools.TAKEN_FROM_ARGUMENT1: (_LEN1, 1), pickletools.TAKEN_FROM_ARGUMENT4: (_LEN4S, 4),
             pickletools.TAKEN_FROM_ARGUMENT4U: (_LEN4U, 4), pickletools.TAKEN_FROM_ARGUMENT8U: (_LEN8U, 8)}
    table: list[tuple[int, int, bool, int, int, int] | None] = [None] * 256
    for op in pickletools.opcodes:
        arg = op.arg
        if arg is None:
            kind, size = _FIXED, 0
        elif arg.n >= 0:
            kind, size = _FIXED, arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            kind, size = _LINES, 2 if arg.name == "stringnl_noescape_pair" else 1
        else:
            kind, size = kinds[arg.n]
        before = op.stack_before
        to_mark = pickletools.markobject in before
        below = before.index(pickletools.markobject) if to_mark else len(before)
        pushed = 0 if op.name == "MARK" else len(op.stack_after)
        table[ord(op.code)] = (kind, size, to_mark, below, pushed, _SPECIAL.get(op.name, _GENERIC))
    return table


_OPCODES = _opcode_table()


def _too_deep(source: str, pos: int) -> UnsafePickleError:
    return UnsafePickleError(
        f"{source}: refused to unpickle: its tuples nest more than {MAX_TUPLE_DEPTH} levels deep (at byte "
        f"{pos}), which no annotation file does and which would crash Python when hashed. The file is "
        "corrupt or hostile: download or write it again."
    )


def check_nesting(data: Any, source: str = "<bytes>") -> None:
    """Refuse a pickle whose tuples nest deeper than :data:`MAX_TUPLE_DEPTH` (module docstring).

    ``data`` is anything indexable as bytes (bytes, memoryview, mmap).  The scan follows the
    unpickler's stack and memo without building objects, tracking only how deep each item's
    tuples nest (0 for anything that is not a tuple: lists, dicts and sets are unhashable, and
    frozensets hash from their elements' cached hashes).  A pickle that mixes PUT and MEMOIZE
    opcodes (no pickler does) has its memo fetches bounded by the deepest memoised tuple.
    Malformed opcodes end the scan quietly: the unpickler then reports them.  About 0.5 us per
    opcode.

    Raises:
        UnsafePickleError: tuples nested deeper than the limit.
    """
    table = _OPCODES
    stack: list[int] = []  # tuple depth of each stack item, 0 for anything else
    marks: list[int] = []
    memo: dict[int, int] = {}  # memo index -> tuple depth, for depths > 0
    memo_len = memo_max = 0
    puts = memoizes = False
    uint4 = struct.Struct("<I").unpack_from
    pos, end = 0, len(data)
    while pos < end:
        op = data[pos]
        # Fast paths for the opcodes that dominate annotation pickles (same effect as below).
        if op == 0x6A and not (puts and memoizes) and pos + 5 <= end:  # LONG_BINGET
            stack.append(memo.get(uint4(data, pos + 1)[0], 0) if memo else 0)
            pos += 5
            continue
        if op == 0x4B:  # BININT1
            stack.append(0)
            pos += 2
            continue
        entry = table[op]
        if entry is None:
            return
        kind, size, to_mark, below, pushed, special = entry
        arg = pos = pos + 1
        if kind == _FIXED:
            pos += size
        elif kind == _LEN1:
            if pos >= end:
                return
            pos += 1 + data[pos]
        elif kind == _LINES:
            for _ in range(size):
                pos = data.find(b"\n", pos) + 1
                if pos == 0:
                    return
        else:
            length = int.from_bytes(data[pos:pos + size], "little", signed=kind == _LEN4S)
            if length < 0:
                return
            pos += size + length
        if special == _GENERIC:
            if below or to_mark:
                if to_mark:
                    if not marks:
                        return
                    del stack[marks.pop():]
                if below:
                    if len(stack) < below:
                        return
                    del stack[-below:]
            if pushed:
                stack.append(0)
        elif special == _MEMOIZE:
            if not stack:
                return
            memoizes = True
            if stack[-1]:
                memo[memo_len] = stack[-1]
                memo_max = max(memo_max, stack[-1])
            memo_len += 1
        elif special == _MARK:
            marks.append(len(stack))
        elif special == _TUPLE:
            if to_mark:
                if not marks:
                    return
                start = marks.pop()
            else:
                start = len(stack) - below
                if start < 0:
                    return
            depth = 1 + max(stack[start:], default=0)
            del stack[start:]
            if depth > MAX_TUPLE_DEPTH:
                raise _too_deep(source, arg - 1)
            stack.append(depth)
        elif special == _PUT or special == _GET:
            try:
                index = int(data[arg:pos - 1]) if kind == _LINES else int.from_bytes(data[arg:pos], "little")
            except ValueError:
                return
            if special == _GET:
                stack.append(memo_max if puts and memoizes else memo.get(index, 0))
                continue
            if not stack:
                return
            puts = True
            if stack[-1]:
                memo[index] = stack[-1]
                memo_max = max(memo_max, stack[-1])
            else:
                memo.pop(index, None)
        elif special == _DUP:
            if not stack:
                return
            stack.append(stack[-1])
        elif special == _POP:
            if marks and marks[-1] == len(stack):
                marks.pop()
            elif stack:
                stack.pop()
            else:
                return
        else:  # STOP
            return


def safe_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only plain data (see the module docstring).

    Raises:
        UnsafePickleError: the pickle refers to a global outside the allowlist, calls an admitted
            one in a way no pickler does, or nests tuples too deep.
        ImportFormatError: the data is not a complete pickle.
    """
    check_nesting(data, source)
    return _load(io.BytesIO(data), source)


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` admitting only plain data (see :func:`safe_loads`)."""
    import mmap

    path = Path(path)
    try:
        with path.open("rb") as handle:
            try:
                view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file: the unpickler reports it
                view = None
            if view is not None:
                with view:
                    check_nesting(view, str(path))
            return _load(handle, str(path))
    except OSError as err:
        raise ImportFormatError(f"cannot read {path}: {err.strerror or err}. Check the path.") from None


def _load(handle: BinaryIO, source: str) -> Any:
    try:
        return _RestrictedUnpickler(handle, source).load()
    except ImportFormatError as err:
        if str(err).startswith(source):
            raise
        raise type(err)(f"{source}: {err}") from None
    except Exception as err:  # noqa: BLE001 - whatever a corrupt pickle makes the unpickler or numpy raise
        detail = str(err)
        if len(detail) > 200:
            detail = detail[:200] + "..."
        raise ImportFormatError(
            f"{source}: not a readable pickle ({type(err).__name__}: {detail}). The file is truncated, "
            "corrupt or not a pickle: download or write it again."
        ) from None
