"""Issue 6 item 2: a corpus of bad inputs through the real ``msclr extract`` CLI.

The corpus is generated here (one folder mixing good and bad files) and extracted with the MeTRAbs
stand-in SavedModel (``tests/metrabs_standin.py``) in **script mode**: every frame carries its index
in pixel (0, 0), the script says who is in that frame.  Scripted videos are written losslessly (FFV1
in AVI) so the index survives encoding; lossy files (the hand-written MJPEG AVI) have a grey corner,
whose index is out of range and is clamped by the stand-in to the script's last entry (one person).

What each file must give (per-file status in the cache and in the summary table; the run goes on):

=====================  =========================================================================
file                   expected
=====================  =========================================================================
good_two.avi           ok, 2 persons
good_one.avi           ok, 1 person
nobody.avi             no_person (the model sees nobody in any frame)
three.avi              ok, 2 persons kept of 3, the message says a track was dropped
tiny16.avi             ok (a 16x16 video)
truncated.avi          ok with the frames before the cut; the message says "truncated"
truncated_head.avi     decode_error: "starts like an AVI/RIFF file but is truncated or damaged"
sizes.avi              frame size changes mid-stream (hand-written MJPEG AVI, see below): ok,
                       the message says frames repeat / frame size change
zero.mp4               empty (0 bytes)
text.mp4               decode_error: "not a video but a text file"
locked.avi             unreadable: "permission denied"
=====================  =========================================================================

Unreadable permissions: tests often run as root, for whom ``chmod 000`` does not stop reading.  As a
non-root user the file is really ``chmod 000``; as root, the module-level ``open`` of
:mod:`msclr.extractors.video` is replaced by one that raises ``PermissionError`` for that file (the
same exception the operating system raises), and :func:`test_real_permission_denied_as_root` checks
the real operating-system refusal too, in a child process whose capability bounding set lacks
``CAP_DAC_OVERRIDE`` / ``CAP_DAC_READ_SEARCH`` (root then obeys the permission bits).

Frame size change: OpenCV's VideoWriter cannot change size, so ``_mjpeg_avi`` writes a RIFF AVI by
hand (``avih``, ``strh``/``strf``, ``movi`` with one JPEG per ``00dc`` chunk, ``idx1``) whose JPEGs
change size halfway.  This found that OpenCV's FFmpeg backend returns the last good frame again for
every frame of the new size, silently (now counted and reported, see ``msclr/extractors/video.py``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_module

from msclr.cli import cli
from msclr.extractors import video as video_module
from msclr.extractors.video import write_video
from msclr.pipeline.cache import Cache

REPO = Path(__file__).resolve().parents[1]

BOX_A, BASE_A = [4.0, 4.0, 20.0, 40.0, 0.95], [-300.0, 150.0, 3000.0]
BOX_B, BASE_B = [36.0, 4.0, 20.0, 40.0, 0.85], [300.0, 150.0, 3300.0]
BOX_C, BASE_C = [20.0, 10.0, 16.0, 30.0, 0.5], [0.0, 100.0, 4500.0]

# (file, first frame index, frames, people per frame, (height, width))
SCRIPTED = [
    ("good_two.avi", 0, 12, "AB", (48, 64)),
    ("good_one.avi", 12, 10, "A", (48, 64)),
    ("nobody.avi", 22, 10, "", (48, 64)),
    ("three.avi", 32, 12, "ABC", (48, 64)),
    ("tiny16.avi", 44, 8, "A", (16, 16)),
    ("truncated.avi", 52, 24, "B", (48, 64)),
]
PEOPLE = {"A": (BOX_A, BASE_A), "B": (BOX_B, BASE_B), "C": (BOX_C, BASE_C)}


def _script() -> list[list]:
    script: list[list] = []
    for _, first, n, who, _ in SCRIPTED:
        assert len(script) == first
        script += [[PEOPLE[p] for p in who] for _ in range(n)]
    return [*script, [PEOPLE["A"]]]  # last entry: every out-of-range (lossy, grey corner) frame


def _indexed_frames(first: int, n: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """RGB frames with noise (so no two frames are equal) and the frame index in pixel (0, 0)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(first, first + n):
        f = rng.integers(20, 235, (*size, 3), dtype=np.uint8)
        f[0, 0] = (i % 256, i // 256, 0)
        frames.append(f)
    return frames


def _chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _mjpeg_avi(path: Path, frames_bgr: list[np.ndarray], fps: int = 30) -> None:
    """An MJPEG AVI written by hand, so that frames may change size (the headers give the first size)."""
    jpgs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames_bgr]
    h, w = frames_bgr[0].shape[:2]
    n = len(jpgs)
    avih = struct.pack("<14I", 1_000_000 // fps, 0, 0, 0x10, n, 0, 1, 0, w, h, 0, 0, 0, 0)
    strh = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"vids", b"MJPG", 0, 0, 0, 0, 1, fps, 0, n, 0, 0xFFFFFFFF, 0,
                       0, 0, w, h)
    strf = struct.pack("<IiiHH4sIiiII", 40, w, h, 1, 24, b"MJPG", w * h * 3, 0, 0, 0, 0)
    strl = _chunk(b"LIST", b"strl" + _chunk(b"strh", strh) + _chunk(b"strf", strf))
    hdrl = _chunk(b"LIST", b"hdrl" + _chunk(b"avih", avih) + strl)
    movi, index = b"", b""
    for j in jpgs:
        index += struct.pack("<4sIII", b"00dc", 0x10, 4 + len(movi), len(j))
        movi += _chunk(b"00dc", j)
    body = b"AVI " + hdrl + _chunk(b"LIST", b"movi" + movi) + _chunk(b"idx1", index)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _size_change_frames() -> list[np.ndarray]:
    """4 frames of 48x64 then 4 of 96x80 (BGR), noisy, with a grey top-left corner."""
    rng = np.random.default_rng(7)
    out = []
    for t in range(8):
        h, w = (48, 64) if t < 4 else (96, 80)
        f = rng.integers(20, 235, (h, w, 3), dtype=np.uint8)
        f[:16, :16] = 128
        out.append(f)
    return out


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted MeTRAbs stand-in, built once per module (TensorFlow start-up is slow)."""
    require_module("tensorflow")
    from metrabs_standin import build_standin

    return build_standin(tmp_path_factory.mktemp("standin") / "model", script=_script()).path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "mixed"
    root.mkdir()
    for k, (name, first, n, _, size) in enumerate(SCRIPTED):
        write_video(root / name, _indexed_frames(first, n, size, seed=k), codec="FFV1")
    full = (root / "truncated.avi").read_bytes()
    (root / "truncated_head.avi").write_bytes(full[:300])  # the RIFF header and nothing else
    (root / "truncated.avi").write_bytes(full[: len(full) * 55 // 100])
    _mjpeg_avi(root / "sizes.avi", _size_change_frames())
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is a shopping list, not a video\n" * 40)
    (root / "locked.avi").write_bytes((root / "good_one.avi").read_bytes())
    (root / "notes.txt").write_text("not a video extension: ignored")
    return root


EXPECTED = {
    "good_two": "ok", "good_one": "ok", "nobody": "no_person", "three": "ok", "tiny16": "ok",
    "truncated": "ok", "truncated_head": "decode_error", "sizes": "ok", "zero": "empty",
    "text": "decode_error", "locked": "unreadable",
}


@pytest.fixture
def locked(corpus: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Make corpus/locked.avi unreadable for this test (see the module docstring)."""
    path = corpus / "locked.avi"
    if os.geteuid() != 0:
        path.chmod(0)
        yield path
        path.chmod(0o644)
        return

    real_open = open

    def guarded_open(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(file) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(video_module, "open", guarded_open, raising=False)
    yield path


def _extract(*args: str):  # noqa: ANN202
    return CliRunner().invoke(cli, ["extract", *args], catch_exceptions=False)


def _rows(output: str) -> dict[str, str]:
    """clip -> status from the summary table printed on stdout."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) >= 2 and cells[0] in EXPECTED:
            rows[cells[0]] = cells[1]
    return rows


def test_mixed_folder_statuses_summary_exit_and_retry(tmp_path: Path, standin: Path, corpus: Path,
                                                      locked: Path) -> None:
    out = tmp_path / "cache"
    args = [str(corpus), "--out", str(out), "--pose-model", str(standin), "--batch-size", "5",
            "--skeletons", "smpl_24,kinectv2_25"]
    result = _extract(*args)
    assert result.exit_code == 1, result.output  # some files failed; the run went on to the end
    cache = Cache(out)
    stored = cache.statuses()
    assert {n: s for n, (s, _) in stored.items()} == EXPECTED
    # the summary table lists every file with its status, and the count line adds up
    assert _rows(result.stdout) == EXPECTED, result.stdout
    assert "11 videos: 2 decode_error, 1 empty, 1 no_person, 6 ok, 1 unreadable" in result.stdout
    assert "Traceback" not in result.output

    msg = {n: m for n, (_, m) in stored.items()}
    for name, needle in [
        ("zero", "0 bytes"), ("text", "not a video but a text file"), ("locked", "permission denied"),
        ("truncated_head", "starts like an AVI/RIFF file but is truncated or damaged"),
        ("truncated", "truncated or damaged file? decoded"), ("three", "1 of 3 person tracks dropped"),
        ("sizes", "4 of 8 frames repeat the previous frame"), ("nobody", "in 0 of 10 frames"),
    ]:
        assert needle in msg[name], (name, msg[name])
    for name in ("zero", "text", "locked", "truncated_head"):
        assert str(corpus / f"{name}.{'mp4' if name in ('zero', 'text') else 'avi'}") in msg[name]
    assert "chmod" in msg["locked"] and "--retry-failed" in msg["locked"]
    assert msg["good_two"] == msg["good_one"] == msg["tiny16"] == ""

    # the good and odd-but-usable clips hold the right data
    meta = {n: cache.clip(n) for n in cache.names}
    assert sorted(meta) == sorted(n for n, s in EXPECTED.items() if s == "ok")
    assert (meta["good_two"].frames, meta["good_two"].persons) == (12, 2)
    assert (meta["good_one"].frames, meta["good_one"].persons) == (10, 1)
    assert (meta["tiny16"].frames, meta["tiny16"].persons) == (8, 1)
    assert meta["three"].frames == 12 and meta["three"].persons == 2  # M = 2 slots of 3 people
    assert 0 < meta["truncated"].frames < 24
    np.testing.assert_array_equal(meta["truncated"].frame_indices, np.arange(meta["truncated"].frames))
    assert meta["sizes"].frames == 8
    # the two people kept of three are the confident ones (A 0.95, B 0.85; C 0.5 is dropped)
    np.testing.assert_allclose(np.sort(meta["three"].scores[0]), [0.85, 0.95], atol=1e-6)
    # the same person A in good_one and in slot 0 of three: identical skeletons (metres)
    a_three = meta["three"].poses["smpl_24"][:, np.argmax(meta["three"].scores[0])]
    np.testing.assert_allclose(a_three, meta["good_one"].poses["smpl_24"][:1, 0].repeat(12, 0), atol=1e-6)
    assert np.all(meta["tiny16"].poses["kinectv2_25"][:, 1] == 0)  # unused slot stays zero

    # rerun: nothing to do, failures still failures, the model is not even loaded
    again = _extract(*args)
    assert again.exit_code == 1
    assert "11 videos already in the cache" in again.output or "already done" in again.output
    assert "--retry-failed" in again.output
    assert {n: s for n, (s, _) in Cache(out).statuses().items()} == EXPECTED


def test_retry_failed_after_fixing_permissions(tmp_path: Path, standin: Path, corpus: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that was unreadable and is readable now becomes ok with --retry-failed; the others stay."""
    out = tmp_path / "cache"
    args = [str(corpus / "locked.avi"), str(corpus / "good_two.avi"), "--out", str(out), "--pose-model",
            str(standin), "--skeletons", "smpl_24"]
    path = corpus / "locked.avi"
    real_open = open

    def guarded_open(file, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(file) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(video_module, "open", guarded_open, raising=False)
        first = _extract(*args)
    assert first.exit_code == 1 and Cache(out).statuses()["locked"][0] == "unreadable"
    fixed = _extract(*args, "--retry-failed")
    assert fixed.exit_code == 0, fixed.output  # every selected video now has an ok clip
    cache = Cache(out)
    assert cache.names == ["good_two", "locked"] and cache.clip("locked").frames == 10


def test_only_good_files_exit_0(tmp_path: Path, standin: Path, corpus: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for name in ("good_two.avi", "tiny16.avi", "three.avi"):
        (good / name).write_bytes((corpus / name).read_bytes())
    result = _extract(str(good), "--out", str(tmp_path / "c"), "--pose-model", str(standin),
                      "--skeletons", "smpl_24")
    assert result.exit_code == 0, result.output
    assert _rows(result.stdout) == {"good_two": "ok", "tiny16": "ok", "three": "ok"}


def test_all_bad_folder_keeps_going_exit_1(tmp_path: Path, standin: Path, corpus: Path) -> None:
    """Only broken files (none reaches the model): every one recorded, no model error, exit 1."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("zero.mp4", "text.mp4", "truncated_head.avi"):
        (bad / name).write_bytes((corpus / name).read_bytes())
    (bad / "dir.mp4").mkdir()  # a folder with a video extension is not a video: not picked up
    result = _extract(str(bad), "--out", str(tmp_path / "c"), "--pose-model", str(standin))
    assert result.exit_code == 1
    assert _rows(result.stdout) == {"zero": "empty", "text": "decode_error", "truncated_head": "decode_error"}
    assert "3 videos:" in result.stdout and "Traceback" not in result.output


def test_size_change_is_what_opencv_does(corpus: Path) -> None:
    """Pins the OpenCV behaviour the warning is about: the frames after the size change come back
    as copies of the last good frame (if a future OpenCV decodes them, msclr's resize path applies
    instead and this test should be updated)."""
    from msclr.extractors.video import FrameReader

    with FrameReader(corpus / "sizes.avi", batch_size=8) as reader:
        frames = np.concatenate([b.frames for b in reader])
    assert frames.shape == (8, 48, 64, 3)
    if reader.info.resized_frames:  # a backend that reports the new size: resized, not repeated
        assert reader.info.resized_frames == 4 and reader.info.repeated_frames == 0
    else:
        assert reader.info.repeated_frames == 4
        assert all(np.array_equal(frames[t], frames[3]) for t in range(4, 8))


def _drop_dac_capabilities() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(77)


CHILD = """
import sys
from msclr.extractors.base import ConstantExtractor
from msclr.pipeline.cache import Cache
from msclr.pipeline.extract import extract_videos
summary = extract_videos([sys.argv[1]], sys.argv[2], lambda: ConstantExtractor(), ["smpl_24"])
print(summary.exit_code, Cache(sys.argv[2]).statuses())
"""


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="root on Linux only (else see `locked`)")
def test_real_permission_denied_as_root(tmp_path: Path, corpus: Path) -> None:
    """The operating system's own refusal (chmod 000, root without CAP_DAC_*), through the pipeline."""
    folder = tmp_path / "v"
    folder.mkdir()
    locked = folder / "locked.avi"
    locked.write_bytes((corpus / "good_one.avi").read_bytes())
    (folder / "fine.avi").write_bytes((corpus / "good_one.avi").read_bytes())
    locked.chmod(0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(tmp_path / "c")], env=env,
                          capture_output=True, text=True, preexec_fn=_drop_dac_capabilities, timeout=120)
    if proc.returncode == 77:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (no CAP_SETPCAP)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1 ")
    statuses = Cache(tmp_path / "c").statuses()
    assert statuses["fine"][0] == "ok"
    assert statuses["locked"][0] == "unreadable" and "permission denied" in statuses["locked"][1]
    assert str(locked) in statuses["locked"][1]
