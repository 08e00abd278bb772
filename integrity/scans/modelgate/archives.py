"""Archives read strictly: zip (own parser, cross-checked headers), tar, and compressed streams.

Readers disagree about malformed archives, and attackers use exactly that: two members with the
same name (a scanner reads one, ``torch.load`` the other), a local header that names a different
file than the central directory, bytes outside every member (a second format hiding in the gaps),
encrypted or "patched" members nobody can inspect, and bombs. Every such archive is refused.
"""

import bz2
import lzma
import posixpath
import struct
import tarfile
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from integrity.scans.modelgate._report import Findings

EOCD, EOCD64, EOCD64_LOCATOR = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
CENTRAL, LOCAL, DESCRIPTOR = b"PK\x01\x02", b"PK\x03\x04", b"PK\x07\x08"
ALLOWED_FLAGS = 0x0002 | 0x0004 | 0x0008 | 0x0800  # deflate options, data descriptor, UTF-8 names
ENCRYPTION_FLAGS = 0x0001 | 0x0040 | 0x2000  # traditional, strong, encrypted central directory
METHODS = {0: "stored", 8: "deflated", 12: "bzip2"}
CHUNK = 1 << 20
_ZLIB = type(zlib.decompressobj())


@dataclass(frozen=True)
class Limits:
    """Resource limits for what the gate will unpack while it inspects an archive."""

    max_ratio: int = 100  # declared expansion beyond which a large member is a bomb
    ratio_floor: int = 64 << 20  # members smaller than this may compress arbitrarily well
    max_member: int = 16 << 30
    max_total: int = 32 << 30
    max_members: int = 100_000
    max_depth: int = 4


@dataclass
class ZipMember:
    name: str
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    header_offset: int
    data_offset: int = 0
    data_end: int = 0


class ZipError(ValueError):
    pass


def _u(fmt: str, data: bytes, pos: int) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, data, pos)
    except struct.error as exc:
        raise ZipError(f"truncated structure at {pos}") from exc


def read_zip(handle: BinaryIO, size: int, where: str, out: Findings, limits: Limits) -> list[ZipMember] | None:
    """Parse and cross-check a zip; returns its members or None when it is too broken to read."""
    try:
        return _read_zip(handle, size, where, out, limits)
    except ZipError as exc:
        out.add(where, None, "zip.malformed", f"damaged or inconsistent zip: {exc}")
        return None


def _read_zip(handle: BinaryIO, size: int, where: str, out: Findings, limits: Limits) -> list[ZipMember]:
    tail_size = min(size, 22 + 65535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    eocd = -1
    for index in range(len(tail) - 22, -1, -1):
        if tail[index:index + 4] == EOCD and index + 22 + _u("<H", tail, index + 20)[0] == len(tail):
            eocd = size - tail_size + index
            break
    if eocd < 0:
        raise ZipError("no end-of-central-directory record at the end of the file")
    disk, cd_disk, _, count, cd_size, cd_offset, _comment = _u("<HHHHIIH", tail, eocd - (size - tail_size) + 4)
    if disk or cd_disk:
        raise ZipError("multi-disk archives are not supported")
    regions = [(eocd, size, "end record")]
    locator = b""
    if eocd >= 20:
        handle.seek(eocd - 20)
        locator = handle.read(20)
    saturated = count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF
    if locator[:4] == EOCD64_LOCATOR:
        (record,) = _u("<Q", locator, 8)
        if record > size - 56:
            raise ZipError(f"zip64 locator points at offset {record}, outside the file")
        handle.seek(record)
        head = handle.read(56)
        if head[:4] != EOCD64:
            raise ZipError("zip64 locator does not point at a zip64 end record")
        (record_size,) = _u("<Q", head, 4)
        count64, cd_size64, cd_offset64 = _u("<QQQ", head, 32)
        if not saturated and (count64, cd_size64, cd_offset64) != (count, cd_size, cd_offset):
            out.add(where, record, "zip.header-mismatch", "zip64 end record disagrees with the end record")
        count, cd_size, cd_offset = count64, cd_size64, cd_offset64
        regions += [(record, record + 12 + record_size, "zip64 end record"), (eocd - 20, eocd, "zip64 locator")]
    elif saturated:
        raise ZipError("zip64 fields without a zip64 locator")
    if count > limits.max_members:
        raise ZipError(f"{count} members is more than the limit of {limits.max_members}")
    if cd_offset + cd_size > size:
        raise ZipError("central directory runs past the end of the file")
    handle.seek(cd_offset)
    central = handle.read(cd_size)
    regions.append((cd_offset, cd_offset + cd_size, "central directory"))
    members: list[ZipMember] = []
    pos = 0
    while pos < len(central):
        if central[pos:pos + 4] != CENTRAL:
            raise ZipError(f"bad central directory entry at {cd_offset + pos}")
        (flags, method, _, _, crc, csize, usize, nlen, xlen, clen, disk_start, _, _, offset) = _u(
            "<HHHHIIIHHHHHII", central, pos + 8)
        raw_name = central[pos + 46:pos + 46 + nlen]
        extra = central[pos + 46 + nlen:pos + 46 + nlen + xlen]
        usize, csize, offset = _zip64(extra, usize, csize, offset)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        members.append(ZipMember(name, flags, method, crc, csize, usize, offset))
        pos += 46 + nlen + xlen + clen
        if disk_start:
            raise ZipError(f"member {name!r} starts on another disk")
        if raw_name != central[pos - clen - xlen - nlen:pos - clen - xlen]:
            raise ZipError("name decoding")
        _check_local(handle, size, members[-1], raw_name, where, out)
        regions.append((offset, members[-1].data_end, f"member {name!r}"))
    if len(members) != count:
        out.add(where, cd_offset, "zip.count-mismatch",
                f"the end record says {count} members, the central directory lists {len(members)}")
    _check_names(members, where, out)
    _check_coverage(regions, size, where, out)
    for member in members:
        mwhere = f"{where}!{member.name}"
        if member.flags & ENCRYPTION_FLAGS:
            out.add(mwhere, member.header_offset, "zip.encrypted", "encrypted member: its content cannot be inspected")
        elif member.flags & ~ALLOWED_FLAGS & 0xFFFF:
            out.add(mwhere, member.header_offset, "zip.reserved-flags",
                    f"general-purpose flags 0x{member.flags:04x} use reserved or patched-data bits")
        if member.method not in METHODS:
            out.add(mwhere, member.header_offset, "zip.method", f"compression method {member.method} is not supported")
        if member.size > limits.ratio_floor and member.size > limits.max_ratio * max(member.compressed, 1):
            out.add(mwhere, member.header_offset, "zip.bomb",
                    f"{member.compressed} bytes expand to {member.size} (ratio above {limits.max_ratio})")
        if member.size > limits.max_member:
            out.add(mwhere, member.header_offset, "zip.too-large", f"member of {member.size} bytes is over the limit")
    return members


def _zip64(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = _u("<HH", extra, pos)
        if tag == 1:
            body, index = extra[pos + 4:pos + 4 + length], 0
            values = []
            for current in (usize, csize, offset):
                if current == 0xFFFFFFFF:
                    values.append(_u("<Q", body, index)[0])
                    index += 8
                else:
                    values.append(current)
            return values[0], values[1], values[2]
        pos += 4 + length
    return usize, csize, offset


def _check_local(handle: BinaryIO, size: int, member: ZipMember, raw_name: bytes, where: str, out: Findings) -> None:
    if not 0 <= member.header_offset <= size - 30:
        raise ZipError(f"member {member.name!r}: local header offset {member.header_offset} is outside the file")
    handle.seek(member.header_offset)
    head = handle.read(30)
    if head[:4] != LOCAL:
        raise ZipError(f"member {member.name!r}: no local header at {member.header_offset}")
    flags, method, _, _, crc, csize, usize, nlen, xlen = _u("<HHHHIIIHH", head, 6)
    local_name = handle.read(nlen)
    local_extra = handle.read(xlen)
    usize, csize, _ = _zip64(local_extra, usize, csize, 0)
    mwhere = f"{where}!{member.name}"
    problems = []
    if local_name != raw_name:
        problems.append(f"local header names {local_name[:80]!r}")
    if flags != member.flags:
        problems.append(f"flags 0x{flags:04x} vs 0x{member.flags:04x}")
    if method != member.method:
        problems.append(f"method {method} vs {member.method}")
    if not flags & 0x08 and (crc, csize, usize) != (member.crc, member.compressed, member.size):
        problems.append("CRC or sizes differ")
    if flags & 0x08 and (crc, csize, usize) not in ((0, 0, 0), (member.crc, member.compressed, member.size)):
        problems.append("CRC or sizes differ from the central directory")
    member.data_offset = member.header_offset + 30 + nlen + xlen
    member.data_end = member.data_offset + member.compressed
    if member.data_end > size:
        raise ZipError(f"member {member.name!r} runs past the end of the file")
    if flags & 0x08:
        handle.seek(member.data_end)
        descriptor = handle.read(24)
        body = descriptor[4:] if descriptor[:4] == DESCRIPTOR else descriptor
        skip = 4 if descriptor[:4] == DESCRIPTOR else 0
        for width in (4, 8):
            fmt = "<III" if width == 4 else "<IQQ"
            if len(body) >= struct.calcsize(fmt) and _u(fmt, body, 0) == (member.crc, member.compressed, member.size):
                member.data_end += skip + struct.calcsize(fmt)
                break
        else:
            problems.append("data descriptor missing or different from the central directory")
    if problems:
        out.add(mwhere, member.header_offset, "zip.header-mismatch",
                "local and central headers disagree: " + "; ".join(problems))


def _check_names(members: list[ZipMember], where: str, out: Findings) -> None:
    seen: dict[str, str] = {}
    for member in members:
        name = member.name
        mwhere = f"{where}!{name}"
        parts = name.replace("\\", "/").split("/")
        if (not name or "\x00" in name or name.startswith(("/", "\\")) or ".." in parts or
                (len(parts[0]) == 2 and parts[0][1] == ":") or "\\" in name):
            out.add(mwhere, member.header_offset, "zip.path-escape", f"member name {name!r} escapes the archive root")
        key = unicodedata.normalize("NFC", posixpath.normpath(name.replace("\\", "/"))).casefold()
        if key in seen:
            same = seen[key] == name
            out.add(mwhere, member.header_offset, "zip.duplicate-member",
                    f"member {name!r} appears twice" if same else f"member {name!r} collides with {seen[key]!r}")
        seen[key] = name


def _check_coverage(regions: list[tuple[int, int, str]], size: int, where: str, out: Findings) -> None:
    position = 0
    for start, end, label in sorted(regions):
        if start > position:
            out.add(where, position, "zip.unaccounted-bytes", f"{start - position} bytes before the {label} "
                    "belong to no member (hidden data or a second format)")
        elif start < position:
            out.add(where, start, "zip.overlap", f"the {label} overlaps earlier data")
        position = max(position, end)
    if position != size:
        out.add(where, position, "zip.unaccounted-bytes", f"{size - position} bytes after the end record")


def extract_zip_member(handle: BinaryIO, member: ZipMember, dest: Path | None, where: str, out: Findings,
                       budget: list[int]) -> bool:
    """Inflate one member (to ``dest``, or only to check it), verifying its size and CRC."""
    mwhere = f"{where}!{member.name}"
    if member.flags & ENCRYPTION_FLAGS or member.method not in METHODS:
        return False
    handle.seek(member.data_offset)
    remaining = member.compressed
    decoder: zlib._Decompress | bz2.BZ2Decompressor | None = (
        zlib.decompressobj(-15) if member.method == 8 else bz2.BZ2Decompressor() if member.method == 12 else None)
    crc, produced = 0, 0
    sink = open(dest, "wb") if dest is not None else None  # noqa: SIM115 - closed below
    try:
        while remaining:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            pieces = [chunk] if decoder is None else [_inflate(decoder, chunk, member.size - produced + 1)]
            for piece in pieces:
                produced += len(piece)
                if produced > member.size or produced > budget[0]:
                    out.add(mwhere, member.header_offset, "zip.bomb",
                            f"member inflates beyond its declared {member.size} bytes or the unpacking budget")
                    return False
                crc = zlib.crc32(piece, crc)
                if sink is not None:
                    sink.write(piece)
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        out.add(mwhere, member.header_offset, "zip.corrupt", f"member does not decompress: {exc}")
        return False
    finally:
        if sink is not None:
            sink.close()
    budget[0] -= produced
    if produced != member.size or crc != member.crc:
        out.add(mwhere, member.header_offset, "zip.bad-crc",
                f"member gives {produced} bytes with CRC {crc:08x}; the header says {member.size} and {member.crc:08x}")
        return False
    return True


def _inflate(decoder: "zlib._Decompress | bz2.BZ2Decompressor", chunk: bytes, limit: int) -> bytes:
    if isinstance(decoder, bz2.BZ2Decompressor):
        return decoder.decompress(chunk, max_length=limit)
    data = decoder.decompress(chunk, limit)
    if decoder.unconsumed_tail:
        raise ValueError("output larger than declared")
    return data


# -- tar -------------------------------------------------------------------------------------------------


def scan_tar(path: Path, where: str, out: Findings, extract_to: Callable[[str], Path], limits: Limits,
             budget: list[int]) -> list[tuple[Path, str]]:
    """Check every tar member; returns regular members extracted for recursive scanning."""
    extracted: list[tuple[Path, str]] = []
    seen: set[str] = set()
    try:
        with tarfile.open(path, mode="r:") as archive:
            count = 0
            for info in archive:
                count += 1
                if count > limits.max_members:
                    out.add(where, info.offset, "tar.too-many", "too many members")
                    break
                mwhere = f"{where}!{info.name}"
                parts = info.name.split("/")
                if info.name.startswith("/") or ".." in parts or "\x00" in info.name or "\\" in info.name:
                    out.add(mwhere, info.offset, "tar.path-escape", f"member name {info.name!r} escapes the root")
                key = posixpath.normpath(info.name).casefold()
                if key in seen:
                    out.add(mwhere, info.offset, "tar.duplicate-member", f"member {info.name!r} appears twice")
                seen.add(key)
                if info.isdir():
                    continue
                if not info.isreg() or info.issparse():
                    out.add(mwhere, info.offset, "tar.member-type",
                            f"member {info.name!r} is a link, device or sparse file ({info.type!r})")
                    continue
                if info.size > limits.max_member or info.size > budget[0]:
                    out.add(mwhere, info.offset, "tar.too-large", "member is over the unpacking limit")
                    continue
                source = archive.extractfile(info)
                if source is None:
                    continue
                dest = extract_to(info.name)
                with source, open(dest, "wb") as sink:
                    while chunk := source.read(CHUNK):
                        sink.write(chunk)
                budget[0] -= info.size
                extracted.append((dest, mwhere))
            end = archive.offset
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        out.add(where, None, "tar.malformed", f"damaged tar: {exc}")
        return extracted
    with open(path, "rb") as handle:
        handle.seek(end)
        while chunk := handle.read(CHUNK):
            if chunk.strip(b"\x00"):
                out.add(where, end, "tar.trailing-data", "non-zero bytes after the last tar member")
                break
    return extracted


# -- compressed streams ----------------------------------------------------------------------------------


def decompress_stream(path: Path, kind: str, dest: Path, where: str, out: Findings, limits: Limits,
                      budget: list[int]) -> bool:
    """Unpack a gzip/zlib/bz2/xz/lzma stream with a bomb limit; nothing may follow the stream."""
    size = path.stat().st_size
    cap = min(budget[0], limits.max_member, max(limits.ratio_floor, limits.max_ratio * size))
    produced = 0

    def new() -> "zlib._Decompress | bz2.BZ2Decompressor | lzma.LZMADecompressor":
        if kind == "gzip":
            return zlib.decompressobj(31)
        if kind == "zlib":
            return zlib.decompressobj(15)
        if kind == "bz2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)

    decoder = new()
    try:
        with open(path, "rb") as source, open(dest, "wb") as sink:
            pending = b""
            while True:
                chunk = pending or source.read(CHUNK)
                pending = b""
                if not chunk:
                    break
                if decoder.eof:
                    if kind in ("gzip", "bz2", "xz") and chunk.startswith(_MAGIC[kind]):
                        decoder = new()  # a further member of a multi-member stream
                    else:
                        out.add(where, None, "compressed.trailing-data", f"data follows the end of the {kind} stream")
                        return False
                while True:
                    if isinstance(decoder, _ZLIB):
                        piece = decoder.decompress(chunk, cap - produced + 1)
                        chunk = decoder.unconsumed_tail
                        more = bool(chunk)
                    else:
                        piece = decoder.decompress(chunk, max_length=cap - produced + 1)
                        chunk = b""
                        more = not decoder.eof and not decoder.needs_input
                    produced += len(piece)
                    if produced > cap:
                        out.add(where, 0, "compressed.bomb",
                                f"{size} bytes expand beyond {cap} bytes (compression bomb or over the budget)")
                        return False
                    sink.write(piece)
                    if decoder.eof:
                        pending = decoder.unused_data
                        break
                    if not more:
                        break
            if not decoder.eof:
                out.add(where, None, "compressed.truncated", f"the {kind} stream is truncated")
                return False
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        out.add(where, None, "compressed.corrupt", f"cannot decompress the {kind} stream: {exc}")
        return False
    budget[0] -= produced
    return True


_MAGIC = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
