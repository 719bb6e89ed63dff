"""Segment seals: a checksum in each cache segment's HDF5 user block, checked with plain reads before HDF5.

Why: libhdf5 trusts its own metadata.  Random fuzzing (``tests/test_fuzz_cache.py``) found segments with a
few flipped bits on which it never returned: ``attrs.get("format")`` looped inside the library at full CPU,
so ``msclr info`` / ``train`` would hang instead of failing.  HDF5 1.10's metadata checksums
(``libver="v110"``) caught one such file and not the other.  A seal checked *before* h5py touches the file
turns any such damage into a :class:`~msclr.errors.CacheError` that names the file.

Layout.  Segments are written with an HDF5 user block of ``userblock`` bytes (a power of two >= 512):
HDF5 ignores it and starts its own data after it.  The user block holds::

    [0, 8)            MAGIC = b"MSCLRSL1"
    [8, 12)           n: length of the record, little-endian uint32
    [12, 12 + n)      record: UTF-8 JSON {"userblock": bytes, "size": file bytes,
                                         "skip": [[offset, length, 32 hex digits], ...],
                                         "blake2b": 32 hex digits}
    next 16 bytes     blake2b-128 of the record (the seal checks itself)
    the rest          zeros

``blake2b`` is the 128-bit BLAKE2b of the bytes ``[userblock, size)`` minus the ``skip`` ranges, in file
order; each skip range carries the BLAKE2b-128 of its own bytes.  The skip ranges are the raw pose data of the
contiguous, uncompressed pose datasets: nearly all of a segment's bytes, read by msclr as plain little-endian
floats at the offsets the (checked) metadata gives, so a flipped bit there changes a coordinate and cannot hang
anything.  Opening a cache checks everything else (``verify(path)``: the superblock, object headers,
attributes, the metadata JSON with clip names, labels and statuses, scores and frame indices, the user
block's padding) without reading the poses; ``verify(path, poses=True)`` (``msclr info --verify``) also checks
the pose ranges, which reads the whole file.

Segments written before seals existed start with the HDF5 signature at byte 0; they are read unchecked.

No HDF5 here: :func:`seal` works on the finished file image, :func:`verify` on the file with plain reads.  The
writer gives the pose ranges; :mod:`msclr.pipeline.cache.segments` cross-checks them against the ranges HDF5 reports
after opening.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

MAGIC = b"MSCLRSL1"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LEN = struct.Struct("<I")
_DIGEST_BYTES = 16
_BLOCK = 1 << 20


class SealError(ValueError):
    """A segment's seal is missing, malformed or does not match the file's bytes (message: what differs)."""


def _digest(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest()


def userblock_size(num_ranges: int) -> int:
    """Smallest power of two >= 512 that holds a seal with ``num_ranges`` skip ranges (offsets < 2**63).

    Record bytes: at most 128 for the fixed fields, 80 per range (two 19-digit integers, 34 for the quoted
    digest, punctuation).
    """
    need = len(MAGIC) + _LEN.size + _DIGEST_BYTES + 128 + num_ranges * 80
    size = 512
    while size < need:
        size *= 2
    return size


def _check_ranges(skip: Sequence[Sequence[int]], start: int, size: int) -> list[tuple[int, int]]:
    """Skip ranges as sorted (offset, length) pairs inside [start, size), non-overlapping; SealError if not."""
    out: list[tuple[int, int]] = []
    end = start
    for item in skip:
        if (not isinstance(item, (list, tuple)) or len(item) < 2
                or not all(type(v) is int for v in item[:2])):  # fmt: skip
            raise SealError(f"skip range {item!r} does not start with an [offset, length] pair of integers")
        offset, length = item[:2]
        if length <= 0 or offset < end or offset + length > size:
            raise SealError(f"skip range [{offset}, {length}] is out of order or outside the file")
        out.append((offset, length))
        end = offset + length
    return out


def _covered_digest(read_at: Callable[[int, int], bytes | memoryview], start: int, size: int, skip: Sequence[tuple[int, int]]) -> bytes:
    """BLAKE2b-128 of ``[start, size)`` minus ``skip``; ``read_at(offset, n) -> bytes`` supplies the bytes."""
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    pos = start
    for offset, length in (*skip, (size, 0)):
        while pos < offset:
            n = min(_BLOCK, offset - pos)
            chunk = read_at(pos, n)
            if len(chunk) != n:
                raise SealError(f"the file ends at byte {pos + len(chunk)}, before its sealed size {size}")
            h.update(chunk)
            pos += n
        pos = offset + length
    return h.digest()


def seal(image: memoryview, userblock: int, skip: Sequence[tuple[int, int]]) -> None:
    """Write the seal of a finished segment ``image`` (whole file bytes, writable) into its user block.

    Args:
        image: the segment file's bytes, with a zeroed user block of ``userblock`` bytes at the start.
        userblock: user block size the file was created with (:func:`userblock_size`).
        skip: (offset, length) of the raw pose data to leave out, absolute file offsets, any order.
    """
    size = len(image)
    ranges = _check_ranges(sorted((int(o), int(n)) for o, n in skip), userblock, size)
    if any(image[:userblock]):
        raise ValueError("seal: the user block is not empty (the file was not created for a seal)")
    digest = _covered_digest(lambda o, n: image[o:o + n], userblock, size, ranges)
    skip_record = [[o, n, _digest(image[o:o + n]).hex()] for o, n in ranges]
    record = json.dumps({"userblock": userblock, "size": size, "skip": skip_record, "blake2b": digest.hex()},
                        separators=(",", ":")).encode()
    header = MAGIC + _LEN.pack(len(record)) + record + _digest(record)
    if len(header) > userblock:
        raise ValueError(f"seal: {len(header)} bytes do not fit a {userblock}-byte user block")
    image[:len(header)] = header


def verify(path: str | os.PathLike[str], *, poses: bool = False) -> list[tuple[int, int]] | None:
    """Check a segment file's seal with plain reads.

    Args:
        path: the segment file.
        poses: also check the raw pose ranges against their own checksums (reads the whole file).

    Returns:
        The sealed skip ranges ((offset, length), sorted) when the seal matches; None for an unsealed HDF5
        file (a segment written before seals).

    Raises:
        SealError: the file is neither, its seal is damaged, or its bytes differ from the sealed ones.
        OSError: the file cannot be read.
    """
    with open(Path(path), "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(512)
        if size == 0:
            raise SealError("the file is empty (0 bytes)")
        if head[:8] == HDF5_SIGNATURE:
            return None
        if head[:8] != MAGIC:
            raise SealError("it starts with neither a msclr seal nor the HDF5 signature")
        (n,) = _LEN.unpack_from(head, 8) if len(head) >= 12 else (-1,)
        if not 0 < n <= (1 << 20):
            raise SealError("the seal's record length is damaged")
        fh.seek(12)
        record = fh.read(n)
        stored = fh.read(_DIGEST_BYTES)
        if len(record) != n or stored != _digest(record):
            raise SealError("the seal does not match its own checksum (the user block is damaged)")
        try:
            fields = json.loads(record)
            userblock, sealed_size, skip = fields["userblock"], fields["size"], fields["skip"]
            digest = bytes.fromhex(fields["blake2b"])
        except (ValueError, KeyError, TypeError) as err:  # hash matched: only a writer bug gets here
            raise SealError(f"the seal's record is malformed ({err})") from None
        if (type(userblock) is not int or userblock < 12 + n + _DIGEST_BYTES or userblock & (userblock - 1)
                or type(sealed_size) is not int or not isinstance(skip, list)):  # fmt: skip
            raise SealError("the seal's record is malformed (user block size, file size or skip ranges)")
        if size != sealed_size:
            raise SealError(f"the file has {size} bytes, its seal says {sealed_size} (truncated or appended to)")
        fh.seek(12 + n + _DIGEST_BYTES)
        if any(fh.read(userblock - 12 - n - _DIGEST_BYTES)):
            raise SealError("the user block's padding is not zero")
        ranges = _check_ranges(skip, userblock, size)

        def read_at(offset: int, count: int) -> bytes:
            fh.seek(offset)
            return fh.read(count)

        if _covered_digest(read_at, userblock, size, ranges) != digest:
            raise SealError("its bytes differ from the ones written (damaged on disk or edited since)")
        if poses:
            for (offset, length), item in zip(ranges, skip, strict=True):
                if len(item) != 3 or _covered_digest(read_at, offset, offset + length, ()).hex() != item[2]:
                    raise SealError(f"its pose data in bytes [{offset}, {offset + length}) differs from the data "
                                    "written (damaged on disk or edited since)")
    return ranges


__all__ = ["HDF5_SIGNATURE", "MAGIC", "SealError", "seal", "userblock_size", "verify"]
