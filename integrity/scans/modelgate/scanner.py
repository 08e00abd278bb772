"""The gate itself: recognise every file by its bytes, inspect it with the matching reader, recurse
into archives, and refuse anything unknown, ambiguous or unaccounted for.
"""

import io
import itertools
import os
import posixpath
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

from integrity.errors import ArtifactReadError
from integrity.scans.modelgate import archives, gguf, graphs, keras, tensors
from integrity.scans.modelgate._report import Findings, ScanReport
from integrity.scans.modelgate.allowlist import Allowlist, load_allowlist
from integrity.scans.modelgate.archives import Limits, ZipMember
from integrity.scans.modelgate.oracle import unpickler_verdict
from integrity.scans.modelgate.pickles import TORCH_STORAGE_SIZES, PickleWalker
from integrity.scans.modelgate.textformats import check_text

LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
#: The legacy magic number's pickle body (LONG1 of 10 bytes, then STOP), whatever the protocol header.
_LEGACY_BODY = LEGACY_TORCH_MAGIC[2:]
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
#: Formats the gate can turn into safetensors (pickle-based weights); everything else is used as is.
PICKLE_FORMATS = ("pytorch-zip", "pytorch-legacy", "pickle", "joblib")
COMPRESSED = ("gzip", "bz2", "xz", "lzma", "zlib")
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyx", ".pyd", ".so", ".dll", ".dylib", ".sh", ".bat", ".ps1",
                 ".ipynb", ".pth.py", ".pbtxt")
TORCH_ZIP_MEMBERS = {"data.pkl", "version", ".format_version", ".storage_alignment", "byteorder",
                     ".data/serialization_id", ".data/version"}
TEXT_CONTROL = set(range(32)) - {9, 10, 12, 13}


def detect_format(path: str | Path) -> str:
    """What a file is, from its bytes alone (the extension is never consulted)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(1024)
        kind = _sniff(head, size)
        if kind == "unknown" and size <= 1 << 31 and head[:1] in (b"\x08", b"\x12"):
            handle.seek(0)
            kind = _sniff_protobuf(handle.read())
    if kind == "unknown" and _is_text(path):
        kind = "text"
    return kind


def _sniff(head: bytes, size: int) -> str:
    if head[:4] in (archives.LOCAL, archives.EOCD):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(keras.HDF5_SIGNATURE):
        return "hdf5"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if len(head) >= 10 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    if _tar_header_ok(head):
        return "tar"
    if _legacy_torch(head):
        return "pytorch-legacy"
    if head[:1] == b"\x80" and 2 <= head[1:2][0] <= 5 if len(head) > 1 else False:
        return "pickle"
    if head[:3] == b"\x5d\x00\x00" and len(head) >= 13:
        return "lzma"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"
    return "unknown"


def _sniff_protobuf(data: bytes) -> str:
    candidates = [name for name, test in (("onnx", graphs.looks_like_onnx),
                                          ("tf-savedmodel", graphs.looks_like_saved_model),
                                          ("tf-fingerprint", graphs.looks_like_fingerprint),
                                          ("keras-metadata", graphs.looks_like_keras_metadata)) if test(data)]
    if len(candidates) == 1:
        return candidates[0]
    return "ambiguous" if candidates else "unknown"


def _legacy_torch(head: bytes) -> bool:
    """A legacy (non-zip) torch checkpoint at any protocol: its first pickle is the magic number.

    Protocols 2 and 3 write ``PROTO n`` then the body; 4 and 5 put it in a ``FRAME`` of 13 bytes.
    """
    if head[:1] != b"\x80" or len(head) < 24:
        return False
    if head[1] in (2, 3):
        return head[2:15] == _LEGACY_BODY
    return head[1] in (4, 5) and head[2:11] == b"\x95\x0d" + b"\x00" * 7 and head[11:24] == _LEGACY_BODY


def _tar_header_ok(head: bytes) -> bool:
    if len(head) < 512 or head[257:262] != b"ustar":
        return False
    try:
        stored = int(head[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 8 * 32 + sum(head[156:512])


def _is_text(path: Path) -> bool:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                if TEXT_CONTROL.intersection(chunk):
                    return False
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


class _Scan:
    """One scan: findings, formats, a temporary area for unpacked members and the unpacking budget."""

    def __init__(self, allowlist: Allowlist, limits: Limits, scratch: Path) -> None:
        self.allowlist, self.limits, self.scratch = allowlist, limits, scratch
        self.findings = Findings()
        self.formats: dict[str, str] = {}
        self.budget = [limits.max_total]  # narrowed by scan_path to the input's size times the ratio
        self.files = 0
        self._ids = itertools.count()

    # -- trees ------------------------------------------------------------------------------------------

    def tree(self, root: Path, prefix: str, depth: int) -> None:
        """Scan a folder: every entry must be a regular file or folder; raw data files must be claimed."""
        pending: list[tuple[Path, str]] = []
        claimed: set[Path] = set()
        saved_models: list[Path] = []
        for path, rel in _walk(root):
            where = f"{prefix}{rel}"
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
                self.findings.add(where, None, "path.special", "symbolic link or special file inside the model")
                continue
            kind = self.file(path, where, depth, folder=path.parent, root=root, defer_unknown=True, claimed=claimed)
            if kind == "unknown":
                pending.append((path, where))
            elif kind == "tf-savedmodel":
                saved_models.append(path.parent)
        for path, where in pending:
            if path.resolve() in claimed:
                self.formats[where] = "onnx-external-data"
            elif self._tf_variables(path, saved_models):
                self.formats[where] = ("tf-checkpoint-index" if path.name == "variables.index"
                                       else "tf-checkpoint-data")
            else:
                self.findings.add(where, 0, "format.unknown",
                                  "unknown format: the gate refuses what it cannot identify")

    def _tf_variables(self, path: Path, saved_models: list[Path]) -> bool:
        for model in saved_models:
            index = model / "variables" / "variables.index"
            if (path.parent == model / "variables" and (path.name.startswith("variables.data-") or path == index)
                    and index.is_file() and graphs.tf_index_ok(index)):
                return True
        return False

    # -- one file -----------------------------------------------------------------------------------------

    def file(self, path: Path, where: str, depth: int, *, folder: Path, root: Path, defer_unknown: bool = False,
             claimed: set[Path] | None = None) -> str:
        self.files += 1
        try:
            kind = detect_format(path)
        except OSError as exc:
            self.findings.add(where, None, "io.error", f"cannot read: {exc}")
            return "error"
        self.formats[where] = kind
        try:
            kind = self._inspect(path, where, kind, depth, folder, root, claimed)
        except Exception as exc:  # fail closed: a reader that breaks is a refusal, never a pass
            self.findings.add(where, None, "internal.error", f"{type(exc).__name__}: {exc}")
            return "error"
        self.formats[where] = kind
        if kind == "unknown" and not defer_unknown:
            self.findings.add(where, 0, "format.unknown", "unknown format: the gate refuses what it cannot identify")
        return kind

    def _inspect(self, path: Path, where: str, kind: str, depth: int, folder: Path, root: Path,
                 claimed: set[Path] | None) -> str:
        size = path.stat().st_size
        out = self.findings
        if size == 0:
            out.add(where, 0, "format.empty", "empty file: the gate cannot identify it (no model format is empty)")
            return "empty"
        kind = self._polyglot(path, where, kind, size)
        if kind == "zip":
            return self._zip(path, where, size, depth)
        if kind == "pytorch-legacy":
            self._legacy_torch(path, where, size)
        elif kind == "pickle":
            with open(path, "rb") as handle:
                walker = PickleWalker(where, self.allowlist, findings=out)
                end = walker.walk(handle, 0, size)
            if end is not None and end != size:
                out.add(where, end, "pickle.trailing-data", f"{size - end} bytes after STOP (a second payload?)")
            if walker.joblib_arrays:
                kind = "joblib"
        elif kind == "safetensors":
            tensors.scan_safetensors(path, where, out)
        elif kind == "npy":
            with open(path, "rb") as handle:
                tensors.scan_npy(handle, size, where, out)
        elif kind == "gguf":
            with open(path, "rb") as handle:
                gguf.scan_gguf(handle, size, where, self.allowlist, out)
        elif kind == "hdf5":
            if keras.scan_hdf5(path.read_bytes(), where, self.allowlist, out):
                kind = "keras-h5"
        elif kind in COMPRESSED:
            if self._deeper(where, depth):
                inner = self._scratch_file()
                if archives.decompress_stream(path, kind, inner, where, out, self.limits, self.budget):
                    inner_kind = self.file(inner, f"{where}!<{kind}>", depth + 1, folder=folder, root=root)
                    kind = f"{inner_kind}+{kind}" if inner_kind in PICKLE_FORMATS else kind
        elif kind == "tar":
            if self._deeper(where, depth):
                unpacked = self._scratch_dir()

                def target(name: str) -> Path:
                    dest = unpacked / f"{next(self._ids)}-{Path(name).name[:80]}"
                    return dest

                for member, mwhere in archives.scan_tar(path, where, out, target, self.limits, self.budget):
                    self.file(member, mwhere, depth + 1, folder=member.parent, root=unpacked)
        elif kind == "onnx":
            result = graphs.scan_onnx(path.read_bytes(), where, folder, root, self.allowlist, out)
            if claimed is not None:
                claimed.update((folder / loc).resolve() for loc, _, _ in result.external)
        elif kind == "tf-savedmodel":
            graphs.scan_saved_model(path.read_bytes(), where, self.allowlist, out)
        elif kind == "keras-metadata":
            for offset, text in graphs.keras_metadata_configs(path.read_bytes()):
                keras.check_loader_json(text.encode(), where, offset, "metadata", self.allowlist, out)
        elif kind == "tf-fingerprint":
            pass
        elif kind == "text":
            kind = self._text(path, where, size)
        elif kind in ("lz4", "ambiguous"):
            out.add(where, 0, "format.unsupported" if kind == "lz4" else "format.polyglot",
                    "lz4 streams are not inspected" if kind == "lz4" else "the bytes parse as more than one format")
        return kind

    def _polyglot(self, path: Path, where: str, kind: str, size: int) -> str:
        """A file must be one thing: no pickle, zip, tar or HDF5 reading of it may find something else."""
        out = self.findings
        with open(path, "rb") as handle:
            if kind not in ("pickle", "pytorch-legacy"):
                verdict = unpickler_verdict(handle, window=None if kind in ("text", "unknown") else 4 << 20)
                if verdict.pickle and kind in ("text", "unknown"):
                    return "pickle"  # a protocol-0/1 pickle, printable or not: walk it strictly for the reasons
                if verdict.imports:
                    out.add(where, 0, "format.polyglot", f"the {kind} file is also a pickle: {verdict.why}",
                            verdict.callable)
            if kind != "zip" and _has_zip_directory(handle, size):
                out.add(where, None, "format.polyglot", f"the {kind} file also ends with a zip central directory")
            if kind != "hdf5":
                offset = 512
                while offset + 8 <= size:
                    handle.seek(offset)
                    if handle.read(8) == keras.HDF5_SIGNATURE:
                        out.add(where, offset, "format.polyglot", f"the {kind} file also holds an HDF5 superblock")
                        break
                    offset *= 2
            if kind != "tar":
                handle.seek(0)
                if _tar_header_ok(handle.read(512)):
                    out.add(where, 0, "format.polyglot", f"the {kind} file is also a tar archive")
        return kind

    def _text(self, path: Path, where: str, size: int) -> str:
        name = path.name.lower()
        if name.endswith(CODE_SUFFIXES) or name == "saved_model.pbtxt":
            self.findings.add(where, None, "format.code", f"{path.name} is program code or a text graph, not weights")
            return "code"
        return check_text(path, where, self.allowlist, self.findings)

    # -- pickle containers --------------------------------------------------------------------------------

    def _legacy_torch(self, path: Path, where: str, size: int) -> None:
        out = self.findings
        with open(path, "rb") as handle:
            offset = 0
            walkers: list[PickleWalker] = []
            for index, context in enumerate(("torch-header", "torch-header", "torch-header", "torch",
                                             "torch-header")):
                walker = PickleWalker(f"{where}#pickle{index + 1}", self.allowlist, context=context, findings=out)
                end = walker.walk(handle, offset, size)
                if end is None:
                    return
                walkers.append(walker)
                offset = end
            magic, protocol = walkers[0].result, walkers[1].result
            if magic is None or magic.value != LEGACY_MAGIC_NUMBER or protocol is None or protocol.value != (
                    LEGACY_PROTOCOL_VERSION):
                out.add(where, 0, "torch.header", "legacy PyTorch magic number or protocol version is wrong")
            keys = walkers[4].strings
            storages = {s.key: s for s in walkers[3].storages}
            if set(keys) != set(storages) or len(keys) != len(set(keys)):
                out.add(where, offset, "torch.storage", "the storage-key list does not match the state's storages")
                return
            position = offset
            for key in keys:
                ref = storages[key]
                handle.seek(position)
                raw = handle.read(8)
                if len(raw) != 8:
                    out.add(where, position, "torch.storage", f"storage {key!r} is truncated")
                    return
                (count,) = struct.unpack("<q", raw)
                if count != ref.numel:
                    out.add(where, position, "torch.storage",
                            f"storage {key!r} holds {count} elements, the state says {ref.numel}")
                    return
                position += 8 + count * TORCH_STORAGE_SIZES[ref.storage_type]
                if position > size:
                    out.add(where, position, "torch.storage", f"storage {key!r} runs past the end of the file")
                    return
            if position != size:
                out.add(where, position, "torch.trailing-data", f"{size - position} bytes after the declared storages")

    def _zip(self, path: Path, where: str, size: int, depth: int) -> str:
        out = self.findings
        with open(path, "rb") as handle:
            members = archives.read_zip(handle, size, where, out, self.limits)
            if members is None:
                return "zip"
            names = [m.name for m in members]
            prefixes = {n.split("/", 1)[0] for n in names}
            if any(n.endswith("data.pkl") for n in names) and len(prefixes) == 1 and all("/" in n for n in names):
                self._torch_zip(handle, members, prefixes.pop(), where)
                return "pytorch-zip"
            if not self._deeper(where, depth):
                return "zip"
            unpacked = self._scratch_dir()
            for member in members:
                if member.name.endswith("/") or member.size > self.limits.max_member or (
                        member.size > self.limits.ratio_floor
                        and member.size > self.limits.max_ratio * max(member.compressed, 1)):
                    continue  # directories; bombs are findings already and are never inflated
                rel = posixpath.normpath(member.name)
                if rel.startswith(("../", "/")) or rel == ".." or "\\" in rel or "\x00" in rel:
                    continue  # already a finding; never written outside the scratch area
                dest = unpacked / rel
                if dest.exists():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                archives.extract_zip_member(handle, member, dest, where, out, self.budget)
        self.tree(unpacked, f"{where}!", depth + 1)
        top = {n for n in names if "/" not in n}
        if {"config.json", "metadata.json"} <= top:
            return "keras"
        if names and all(self.formats.get(f"{where}!{n}") == "npy" for n in names if not n.endswith("/")):
            return "npz"
        return "zip"

    def _torch_zip(self, handle: io.BufferedReader, members: list[ZipMember], prefix: str, where: str) -> None:
        out = self.findings
        by_name = {m.name: m for m in members}
        pickle_member = by_name.get(f"{prefix}/data.pkl")
        if pickle_member is None:
            out.add(where, None, "torch.layout", "no data.pkl under the archive's single top-level folder")
            return
        scratch = self._scratch_file()
        if not archives.extract_zip_member(handle, pickle_member, scratch, where, out, self.budget):
            return
        pwhere = f"{where}!{pickle_member.name}"
        walker = PickleWalker(pwhere, self.allowlist, context="torch", findings=out)
        size = scratch.stat().st_size
        with open(scratch, "rb") as data:
            end = walker.walk(data, 0, size)
        if end is not None and end != size:
            out.add(pwhere, end, "pickle.trailing-data", f"{size - end} bytes after STOP (a second payload?)")
        storages = {s.key: s for s in walker.storages}
        for member in members:
            rel = member.name[len(prefix) + 1:]
            mwhere = f"{where}!{member.name}"
            if rel.startswith("data/") and rel[5:] in storages:
                ref = storages[rel[5:]]
                expected = ref.numel * TORCH_STORAGE_SIZES[ref.storage_type]
                if member.size != expected:
                    out.add(mwhere, member.header_offset, "torch.storage",
                            f"storage {ref.key!r} is {member.size} bytes, the state says {expected}")
                archives.extract_zip_member(handle, member, None, where, out, self.budget)
                self.budget[0] += member.size  # checked in place, never unpacked
            elif rel not in TORCH_ZIP_MEMBERS:
                out.add(mwhere, member.header_offset, "torch.unexpected-member",
                        f"member {rel!r} is not part of a PyTorch weights archive (TorchScript code, extra files?)")
            elif rel != "data.pkl":
                if member.size > 4096:
                    out.add(mwhere, member.header_offset, "torch.layout", f"metadata member {rel!r} is too large")
                else:
                    archives.extract_zip_member(handle, member, None, where, out, self.budget)
                    self.budget[0] += member.size
        for key in storages:
            if f"{prefix}/data/{key}" not in by_name:
                out.add(where, None, "torch.storage", f"storage {key!r} has no data/{key} member")

    # -- helpers -----------------------------------------------------------------------------------------------

    def _deeper(self, where: str, depth: int) -> bool:
        if depth >= self.limits.max_depth:
            self.findings.add(where, None, "archive.too-deep", f"archives nested deeper than {self.limits.max_depth}")
            return False
        return True

    def _scratch_file(self) -> Path:
        return self.scratch / f"m{next(self._ids)}"

    def _scratch_dir(self) -> Path:
        path = self.scratch / f"d{next(self._ids)}"
        path.mkdir()
        return path


def _has_zip_directory(handle: io.BufferedReader, size: int) -> bool:
    tail_size = min(size, 22 + 65535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    index = tail.rfind(archives.EOCD)
    while index >= 0:
        if index + 22 <= len(tail) and index + 22 + struct.unpack_from("<H", tail, index + 20)[0] == len(tail):
            return True
        index = tail.rfind(archives.EOCD, 0, index)
    return False


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + sorted(d for d in dirnames if (Path(dirpath) / d).is_symlink()):
            path = Path(dirpath) / name
            yield path, path.relative_to(root).as_posix()


def _input_bytes(root: Path) -> int:
    if root.is_symlink():
        return 0
    if root.is_file():
        return root.stat().st_size
    return sum(path.lstat().st_size for path, _ in _walk(root) if path.is_file() and not path.is_symlink())


def scan_path(path: str | Path, *, limits: Limits | None = None) -> ScanReport:
    """Scan a model file or folder. Unsafe, unknown or malformed content is a finding; a missing path an error."""
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        raise ArtifactReadError("no such model file or directory", artifact=root)
    allowlist = load_allowlist()
    limits = limits or Limits()
    with tempfile.TemporaryDirectory(prefix="cairn-gate-") as scratch:
        scan = _Scan(allowlist, limits, Path(scratch))
        # Scratch space is bounded by what came in: an absolute cap and a ratio over the input's bytes,
        # so many small, highly compressed members cannot add up to a disk-filling unpack.
        scan.budget[0] = min(limits.max_total, limits.ratio_floor + limits.max_ratio * _input_bytes(root))
        if root.is_symlink() or not (root.is_file() or root.is_dir()):
            scan.findings.add(root.name, None, "path.special", "symbolic link or special file")
        elif root.is_file():
            scan.file(root, root.name, 0, folder=root.parent, root=root.parent)
        else:
            scan.tree(root, "", 0)  # every file counts, model.sig too: it must be the JSON bundle it claims to be
    findings = tuple(scan.findings)
    files = sum(1 for key in scan.formats if "!" not in key)
    return ScanReport(str(root), not findings, scan.formats, findings, files, allowlist.version)
