"""Untrusted pickles: hostile files are refused before anything runs, garbage gives documented errors.

Covers :mod:`msclr.pipeline.datasets.safe_pickle` (the restricted unpickler and its tuple-nesting scan) and the
annotation validation of :func:`msclr.pipeline.datasets.pyskl.read_annotations`:

- a corpus of hostile pickles (``os.system``, ``posix.system``, ``builtins.eval`` / ``exec`` / ``open``,
  ``subprocess.Popen``, nested ``__reduce__`` globals, GLOBAL / STACK_GLOBAL / INST / OBJ / NEWOBJ / EXT
  opcodes, protocols 0-5): each raises ``UnsafePickleError`` and its marker file is never created;
- interpreter crashers found by this file (run in a child process so a regression cannot take pytest
  down): deeply nested tuples as dict keys, ``numpy.ndarray`` called over a buffer with an object dtype,
  deeply nested slices;
- hypothesis: random bytes, mutated valid pickles, grammar-generated opcode programs over the admitted
  globals, and structurally wrong annotation files: only ``MsclrError`` subclasses, never a raw
  exception, and what loads satisfies the documented invariants.
"""

from __future__ import annotations

import builtins
import copyreg
import os
import pickle
import posix
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msclr.errors import ImportFormatError, MsclrError, UnsafePickleError
from msclr.pipeline.datasets import safe_pickle
from msclr.pipeline.datasets.pyskl import MAX_ABS_METRES, MAX_LABEL, read_annotations
from msclr.pipeline.datasets.safe_pickle import (
    ALLOWED_GLOBALS,
    MAX_TUPLE_DEPTH,
    check_nesting,
    safe_load,
    safe_loads,
)

# MSCLR_FUZZ_EXAMPLES=5000 runs a longer fuzzing session by hand; the suite default stays fast.
FUZZ = settings(max_examples=int(os.environ.get("MSCLR_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])
PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


# ------------------------------------------------------------------------ hostile corpus
class _Reduce:
    """Pickles as ``func(*args)``: the classic malicious payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    """Objects that, plainly unpickled, create ``marker``."""
    m = str(marker)
    return {
        "os.system": _Reduce(os.system, f"touch {m}"),
        "posix.system": _Reduce(posix.system, f"touch {m}"),
        "builtins.eval": _Reduce(builtins.eval, f"open({m!r}, 'w').close()"),
        "builtins.exec": _Reduce(builtins.exec, f"open({m!r}, 'w').close()"),
        "builtins.open": _Reduce(builtins.open, m, "w"),
        "subprocess.Popen": _Reduce(subprocess.Popen, ["touch", m]),
        # an admitted global whose argument hides the payload
        "set(payload)": _Reduce(set, ([_Reduce(os.system, f"touch {m}")],)),
        "numpy array state": _Reduce(np.asarray, [1.0]),
    }


def _raw_programs(marker: Path) -> dict[str, bytes]:
    """Hand-written opcode streams (protocols 0-4) that would run ``touch marker``."""
    cmd = f"touch {marker}".encode()
    s0 = b"S'" + cmd + b"'\n"  # protocol-0 string
    u4 = b"\x8c" + bytes([len(cmd)]) + cmd  # SHORT_BINUNICODE
    return {
        "GLOBAL": b"cos\nsystem\n(" + s0 + b"tR.",
        "GLOBAL posix": b"cposix\nsystem\n(" + s0 + b"tR.",
        "GLOBAL py2 name": b"c__builtin__\neval\n(S'__import__(\"os\").system(\"" + cmd + b"\")'\ntR.",
        "STACK_GLOBAL": b"\x80\x04\x8c\x02os\x8c\x06system\x93" + u4 + b"\x85R.",
        "INST": b"(" + s0 + b"ios\nsystem\n.",
        "OBJ": b"(cos\nsystem\n" + s0 + b"o.",
        "NEWOBJ": b"\x80\x02csubprocess\nPopen\n(]" + u4 + b"atR\x81.",
        "nested getattr(__import__)": (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR("
                                       + s0 + b"tR."),
        "global as reduce argument": b"\x80\x02c__builtin__\nset\n(cos\nsystem\n" + s0 + b"tR.",
        "_reconstruct(os.system)": (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n(cos\nsystem\n" + s0
                                    + b"tR."),
        "BUILD with payload state": b"\x80\x02]}(S'x'\ncos\nsystem\n(" + s0 + b"tRdb.",
        "numpy.load": b"\x80\x02cnumpy\nload\n(" + s0 + b"tR.",
        "torch rebuild": b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(tR.",
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(_payloads(Path("x"))))
def test_hostile_reduce_payloads_refused_before_running(tmp_path: Path, name: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    data = pickle.dumps({"split": {}, "annotations": [{"frame_dir": "a", "label": 0, "keypoint": payload}]},
                        protocol=protocol)
    with pytest.raises(UnsafePickleError, match="refused to unpickle"):
        safe_loads(data, source="evil.pkl")
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=str(path)):
        read_annotations(path, "ntu_kinect_25")
    assert not marker.exists()


@pytest.mark.parametrize("name", list(_raw_programs(Path("x"))))
def test_hostile_opcode_programs_refused_before_running(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="refused to unpickle"):
        safe_loads(_raw_programs(marker)[name])
    assert not marker.exists()


def test_extension_registry_goes_through_the_allowlist(tmp_path: Path) -> None:
    """EXT1 resolves a registered (module, name) pair: it must meet find_class like GLOBAL does."""
    marker = tmp_path / "pwned"
    copyreg.add_extension("os", "system", 0xF1)
    try:
        with pytest.raises(UnsafePickleError, match="os.system"):
            safe_loads(b"\x80\x02\x82\xf1(S'touch " + str(marker).encode() + b"'\ntR.")
    finally:
        copyreg.remove_extension("os", "system", 0xF1)
    assert not marker.exists()


def test_admitted_globals_misused_are_refused() -> None:
    recon = b"cnumpy.core.multiarray\n_reconstruct\n"
    with pytest.raises(UnsafePickleError, match="_reconstruct is asked for"):
        safe_loads(b"\x80\x02" + recon + b"(ccollections\nOrderedDict\nK\x00\x85C\x01btR.")
    with pytest.raises(UnsafePickleError, match="numpy.ndarray"):
        safe_loads(b"\x80\x02cnumpy\nndarray\n(K\x02\x85tR.")
    with pytest.raises(UnsafePickleError, match="memory bomb"):
        safe_loads(b"\x80\x02c__builtin__\nbytearray\n(J\xff\xff\xff\x7ftR.")
    with pytest.raises(UnsafePickleError, match="codec 'hex'"):
        safe_loads(pickle.dumps(_Reduce(__import__("codecs").encode, b"ab", "hex"), protocol=2))
    with pytest.raises(UnsafePickleError, match="builtins.slice"):
        safe_loads(pickle.dumps(slice(1, 2)))
    # the legitimate spellings still load
    assert safe_loads(pickle.dumps(bytearray(b"ab"), protocol=2)) == bytearray(b"ab")
    assert safe_loads(pickle.dumps(bytearray(b"ab"), protocol=3)) == bytearray(b"ab")


def test_other_unpickling_failures_are_format_errors() -> None:
    """Failures that used to escape as raw exceptions (LookupError, numpy's RuntimeError)."""
    void_scalar = (b"\x80\x02cnumpy.core.multiarray\nscalar\n(cnumpy\ndtype\n(](S'a'\nS'O'\nta\x89\x88tR"
                   b"C\x08AAAAAAAAtR.")
    with pytest.raises(ImportFormatError, match="not a readable pickle"):
        safe_loads(void_scalar)
    deep_list = b"\x80\x04" + b"]" * 5000 + b"a" * 4999 + b"."
    assert isinstance(safe_loads(deep_list), list)  # built iteratively, freed with the trashcan


_CHILD = textwrap.dedent(
    """
    import sys
    from msclr.errors import MsclrError
    from msclr.pipeline.datasets.safe_pickle import safe_load
    for path in sys.argv[1:]:
        try:
            safe_load(path)
            print(path, "loaded")
        except MsclrError as err:
            print(path, type(err).__name__)
    """
)


def test_interpreter_crashers_are_refused_in_a_child_process(tmp_path: Path) -> None:
    """Each file segfaulted CPython under the previous allowlist; now each is refused cleanly."""
    n = 3_000_000
    files = {
        # dict key of 3M nested tuples: tuple hashing recurses in C without a depth check
        "tuple_key": b"\x80\x04}" + b"K\x01" + b"\x85" * n + b"K\x02s.",
        # the same depth built through the memo (protocol 2 BINPUT/BINGET, protocol 4 MEMOIZE/LONG_BINGET)
        "tuple_memo2": b"\x80\x02}K\x01\x85q\x00" + b"h\x00\x85q\x00" * (n // 3) + b"K\x02s.",
        "tuple_memo4": (b"\x80\x04}K\x01\x85\x94" + b"".join(b"j" + struct.pack("<I", i) + b"\x85\x94"
                                                            for i in range(200_000)) + b"K\x02s."),
        # frozenset of the deep tuple
        "tuple_frozenset": b"\x80\x04(" + b"K\x01" + b"\x85" * n + b"\x91.",
        # ndarray((2,), object, buffer) dereferences the buffer's bytes as PyObject pointers
        "ndarray_buffer": b"\x80\x02cnumpy\nndarray\n(K\x02\x85cnumpy\ndtype\n(S'O8'\ntRC\x10" + b"A" * 16 + b"tR.",
        # 2M nested slices: freed recursively
        "slices": b"\x80\x02cbuiltins\nslice\nq\x00" + b"h\x00" * (n // 2 - 1) + b"K\x01" + b"\x85R" * (n // 2) + b".",
    }
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / f"{name}.pkl")
        paths[-1].write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", _CHILD, *map(str, paths)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = dict(line.split() for line in proc.stdout.splitlines())
    assert results == {str(p): "UnsafePickleError" for p in paths}, results


# ------------------------------------------------------------------------ nesting scan
def _nested(n: int) -> bytes:
    return b"\x80\x02" + b"K\x01" + b"\x85" * n + b"."


def _depth(obj: object) -> int:
    """Tuple-in-tuple nesting depth of ``obj`` itself (0 for anything that is not a tuple)."""
    if not isinstance(obj, tuple):
        return 0
    depths: dict[int, int] = {}
    stack = [(obj, False)]
    while stack:  # iterative post-order: the objects under test may nest deeper than Python recursion
        x, children_done = stack.pop()
        if children_done:
            depths[id(x)] = 1 + max((depths[id(c)] for c in x if isinstance(c, tuple)), default=0)
        elif id(x) not in depths:
            stack.append((x, True))
            stack.extend((c, False) for c in x if isinstance(c, tuple))
    return depths[id(obj)]


def _max_depth(obj: object) -> int:
    """Deepest tuple nesting anywhere inside ``obj`` (through lists, dicts, sets and tuples)."""
    stack, best, seen = [obj], 0, set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, tuple):
            best = max(best, _depth(x))
        if isinstance(x, list | tuple | set | frozenset):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
    return best


def test_nesting_limit_is_exact() -> None:
    assert _depth(safe_loads(_nested(MAX_TUPLE_DEPTH))) == MAX_TUPLE_DEPTH
    with pytest.raises(UnsafePickleError, match=f"more than {MAX_TUPLE_DEPTH} levels"):
        safe_loads(_nested(MAX_TUPLE_DEPTH + 1))
    # mixing PUT and MEMOIZE (no pickler does) falls back to the deepest memoised tuple: still sound
    mixed = b"\x80\x04K\x01\x85q\x00\x94" + b"h\x00\x85q\x00\x94" * (MAX_TUPLE_DEPTH + 5) + b"."
    with pytest.raises(UnsafePickleError):
        check_nesting(mixed)


_PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
              st.binary(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
        st.lists(inner, max_size=3).map(lambda xs: (xs, xs)),  # shared references: memo GETs
    ),
    max_leaves=25,
)


@FUZZ
@given(obj=_PLAIN, protocol=st.sampled_from(PROTOCOLS), limit=st.integers(1, 4))
def test_scan_is_exact_for_pickler_output(obj: object, protocol: int, limit: int, monkeypatch) -> None:
    """For what a real pickler writes, the scan refuses exactly the objects nested deeper than the limit."""
    monkeypatch.setattr(safe_pickle, "MAX_TUPLE_DEPTH", limit)
    data = pickle.dumps(obj, protocol=protocol)
    if _max_depth(obj) > limit:
        with pytest.raises(UnsafePickleError):
            check_nesting(data)
    else:
        check_nesting(data)
        assert safe_loads(data) == obj


# ------------------------------------------------------------------------ grammar fuzzing
def _global(name: str) -> bytes:
    module, attr = name.rsplit(".", 1)
    return b"c" + module.encode() + b"\n" + attr.encode() + b"\n"


_GLOBALS = st.sampled_from(sorted(ALLOWED_GLOBALS) + ["numpy.ndarray", "numpy.core.multiarray._reconstruct",
                                                     "__builtin__.set", "copy_reg._reconstructor"]).map(_global)
_DTYPE_CODES = ["O", "O8", "|O", "f4", "<f8", "b", "V8", "|V4", "S3", "U2", "M8[s]", "c16"]
_SHORT_TEXT = st.one_of(
    st.sampled_from([*_DTYPE_CODES, "latin1", "utf-8", "hex", "rot13", "a", "C", "F"]),
    st.text(max_size=6),
).map(lambda s: s.encode("utf-8", "surrogatepass")[:255]).map(lambda b: b"\x8c" + bytes([len(b)]) + b)
# numpy.dtype(code, False, True), as numpy pickles a dtype, and small shape tuples: the arguments
# that make numpy's constructors misbehave
_DTYPE_EXPR = st.sampled_from(_DTYPE_CODES).map(
    lambda code: b"cnumpy\ndtype\n(\x8c" + bytes([len(code)]) + code.encode() + b"\x89\x88tR")
_SHAPE_EXPR = st.lists(st.integers(0, 4), max_size=3).map(
    lambda dims: b"(" + b"".join(b"K" + bytes([d]) for d in dims) + b"t")
_LEAVES = st.one_of(
    _DTYPE_EXPR,
    _SHAPE_EXPR,
    st.integers(-3, 300).map(lambda n: b"J" + struct.pack("<i", n)),
    st.sampled_from([2**31 - 1, -(2**31), 10**6]).map(lambda n: b"J" + struct.pack("<i", n)),
    st.binary(max_size=24).map(lambda b: b"C" + bytes([len(b)]) + b),
    _SHORT_TEXT,
    st.sampled_from([b"N", b"\x88", b"\x89", b")", b"]", b"}", b"\x8f"]),
    st.floats().map(lambda f: b"G" + struct.pack(">d", f)),
    st.integers(0, 4).map(lambda i: b"h" + bytes([i])),  # memo fetch (may be empty: an error)
    _GLOBALS,
)


def _join(parts: list[bytes]) -> bytes:
    return b"".join(parts)


def _compound(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    items = st.lists(inner, max_size=4).map(_join)
    return st.one_of(
        items.map(lambda x: b"(" + x + b"t"),  # tuple
        items.map(lambda x: b"(" + x + b"l"),  # list
        items.map(lambda x: b"(" + x + b"d"),  # dict (odd item counts are errors)
        items.map(lambda x: b"(" + x + b"\x91"),  # frozenset
        st.tuples(inner, items).map(lambda p: p[0] + b"(" + p[1] + b"tR"),  # call
        st.tuples(_GLOBALS, items).map(lambda p: p[0] + b"(" + p[1] + b"tR"),  # call an admitted global
        st.tuples(_GLOBALS, items).map(lambda p: p[0] + b"(" + p[1] + b"t\x81"),  # NEWOBJ
        st.tuples(inner, inner).map(lambda p: p[0] + p[1] + b"b"),  # BUILD (__setstate__)
        st.tuples(inner, inner).map(lambda p: b"]" + p[0] + b"a" + p[1] + b"a"),  # list appends
        inner.map(lambda x: x + b"\x94"),  # memoise
    )


_PROGRAMS = st.recursive(_LEAVES, _compound, max_leaves=30).map(lambda body: b"\x80\x04" + body + b".")


@FUZZ
@given(data=_PROGRAMS)
def test_opcode_programs_over_admitted_globals_give_only_documented_errors(data: bytes) -> None:
    try:
        obj = safe_loads(data)
    except MsclrError:
        return
    assert _max_depth(obj) <= MAX_TUPLE_DEPTH


@FUZZ
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05", b"("]))
def test_random_bytes_give_only_documented_errors(data: bytes, prefix: bytes) -> None:
    try:
        safe_loads(prefix + data)
    except MsclrError:
        pass


# ------------------------------------------------------------------------ annotation files
def _annotation_file(protocol: int) -> bytes:
    rng = np.random.default_rng(0)
    anns = [{"frame_dir": f"S001C001P001R001A00{i + 1}", "label": i, "total_frames": 3,
             "keypoint": rng.uniform(-1, 1, (1, 3, 25, 3)).astype(np.float32)} for i in range(2)]
    return pickle.dumps({"split": {"xsub_train": [anns[0]["frame_dir"]]}, "annotations": anns}, protocol=protocol)


_BASES = {p: _annotation_file(p) for p in PROTOCOLS}


def _check_read(path: Path) -> None:
    """read_annotations raises only documented errors; what it returns satisfies its contract."""
    try:
        result = read_annotations(path, "ntu_kinect_25")
    except MsclrError as err:
        assert str(path) in str(err) or "--scale" in str(err)
        return
    names = [a.frame_dir for a in result.annotations]
    assert names and len(set(names)) == len(names)
    for ann in result.annotations:
        assert isinstance(ann.frame_dir, str) and "/" not in ann.frame_dir
        assert isinstance(ann.label, int) and 0 <= ann.label <= MAX_LABEL
        kp = ann.keypoint
        assert kp.dtype == np.float32 and kp.ndim == 4 and kp.shape[2:] == (25, 3)
        assert kp.shape[0] >= 1 and kp.shape[1] >= 1
        assert np.isfinite(kp).all() and np.abs(kp).max() <= MAX_ABS_METRES
    for key, members in result.splits.items():
        assert isinstance(key, str) and all(isinstance(n, str) for n in members)


_MUTATION = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                      st.floats(0, 1, exclude_max=True), st.integers(0, 255))


@FUZZ
@given(protocol=st.sampled_from(PROTOCOLS), mutations=st.lists(_MUTATION, min_size=1, max_size=4))
def test_mutated_annotation_pickles_give_only_documented_errors(tmp_path: Path, protocol: int,
                                                                mutations: list) -> None:
    data = bytearray(_BASES[protocol])
    for kind, where, value in mutations:
        i = int(where * len(data))
        if kind == "flip":
            data[i] ^= 1 << (value % 8)
        elif kind == "set":
            data[i] = value
        elif kind == "insert":
            data[i:i] = bytes([value])
        elif kind == "delete":
            del data[i]
        else:
            del data[i:]
        if not data:
            data = bytearray(b"\x80")
    path = tmp_path / "mutated.pkl"
    path.write_bytes(bytes(data))
    try:
        safe_load(path)
    except MsclrError as err:
        assert str(path) in str(err)
        return
    _check_read(path)


_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
    st.binary(max_size=4), st.lists(st.integers(0, 3), max_size=3),
    st.sampled_from([np.int64(3), np.float32(1.5), np.array([2]), np.array([[1]], np.uint64), np.bool_(True),
                     np.uint64(2**64 - 1), np.array(["x"]), {"a": 1}, (1, 2), frozenset({1})]),
)
def _array(shape: tuple, dtype: object, fill: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.full(shape, fill).astype(dtype)


_ARRAYS = st.builds(
    _array,
    st.lists(st.integers(0, 3), min_size=0, max_size=5).map(tuple)
    | st.sampled_from([(1, 3, 25, 3), (2, 2, 25, 3), (1, 2, 25, 2), (1, 2, 17, 3)]),
    st.sampled_from([np.float32, np.float64, np.float16, np.int16, np.uint8, np.bool_, np.complex64, object,
                     "U3"]),
    st.sampled_from([0.5, -2.0, 1e4, np.nan, np.inf, 0]),
)
_FIELD = st.one_of(_ANY_VALUE, _ARRAYS)


@st.composite
def _annotation(draw) -> dict:
    ann = {
        "frame_dir": draw(st.one_of(st.sampled_from(["a", "b", "S001C001P001R001A001"]), _ANY_VALUE)),
        "label": draw(st.one_of(st.integers(0, 5), _ANY_VALUE)),
        "keypoint": draw(st.one_of(st.just(np.zeros((1, 2, 25, 3), np.float32)), _FIELD)),
    }
    if draw(st.booleans()):
        ann["total_frames"] = draw(st.one_of(st.integers(0, 3), _ANY_VALUE))
    if draw(st.booleans()):
        ann["frame_inds"] = draw(_FIELD)
    if draw(st.booleans()):
        ann[draw(st.sampled_from(["keypoint_score", "extra", "img_shape"]))] = draw(_FIELD)
    return ann


_FILES = st.one_of(
    st.builds(lambda anns, split: {"split": split, "annotations": anns},
              st.one_of(st.lists(_annotation(), max_size=3), _ANY_VALUE),
              st.one_of(st.dictionaries(st.one_of(st.text(max_size=3), st.integers()),
                                        st.one_of(st.lists(st.text(max_size=3), max_size=2), _ANY_VALUE),
                                        max_size=2), _ANY_VALUE)),
    st.lists(_annotation(), max_size=3),
    _ANY_VALUE,
)


@FUZZ
@given(content=_FILES, protocol=st.sampled_from(PROTOCOLS))
def test_wrongly_structured_annotation_files_give_only_documented_errors(tmp_path: Path, content: object,
                                                                        protocol: int) -> None:
    path = tmp_path / "wrong.pkl"
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    _check_read(path)


def test_deeply_nested_values_are_reported_briefly(tmp_path: Path) -> None:
    """Error messages quote untrusted values with a bounded repr (no RecursionError, no megabyte line)."""
    deep = b"]" * 5000 + b"a" * 4999
    kp = pickle.dumps(np.zeros((1, 2, 25, 3), np.float32), protocol=4)[2:-1]  # the array's opcodes
    path = tmp_path / "deep.pkl"
    path.write_bytes(b"\x80\x04](}(\x8c\x09frame_dir\x8c\x01a\x8c\x05label" + deep + b"\x8c\x08keypoint" + kp
                     + b"ue.")
    with pytest.raises(ImportFormatError, match=r"'label' must be .*found \[\[\[\[\.\.\.\]\]\]\]") as err:
        read_annotations(path, "ntu_kinect_25")
    assert len(str(err.value)) < 400


# ------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_checkpoint_with_pickle_payload_is_refused_before_running(tmp_path: Path, container: str) -> None:
    """``predict`` / ``--resume`` load checkpoints with ``torch.load(weights_only=True)``: a payload is refused."""
    torch = pytest.importorskip("torch")
    from msclr.errors import CheckpointError
    from msclr.files import load_checkpoint

    marker = tmp_path / "pwned"
    state = {"format": "msclr-checkpoint", "version": 1, "kind": "model", "model": {"w": torch.zeros(2)},
             "extra": _Reduce(os.system, f"touch {marker}")}
    path = tmp_path / "evil.pt"
    if container == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path, kind="model")
    assert not marker.exists()
