"""The source catalog: which third-party datasets and models Cairn ingests, and how.

Adding a source is adding an entry, not code. The catalog is YAML, strictly parsed (an
unknown field is an error that names the entry and the field) and versioned; its digest
goes into every ingestion record. Example::

    version: 1
    policy: policy.yaml                     # trust policy, relative to the catalog's root
    sources:
      breast-cancer:
        kind: dataset
        uri: drops/breast-cancer            # file path (relative to the root), file://, s3:// or https://
        format: csv
        signature: model.sig                # default: model.sig inside a directory, FILE.sig beside a file
        policy_source: breast-cancer        # trust-policy entry; default: the source name
        license: CC-BY-4.0
        origin: https://archive.ics.uci.edu/dataset/17
        suite: breast_cancer.json           # expectation suite (datasets), in the suites folder
        scan_profile: tabular
        extra_files: [README.md, "docs/*"]  # reviewed: files of the drop carried unread (shell patterns)
        schedule: {cron: "0 3 * * *", timezone: Europe/Berlin}  # optional: Dagster ingests it on its own

Relative file paths resolve against the catalog's *root*: the Cairn home (``$CAIRN_HOME``,
where vendor drops land) unless the catalog says ``root:``. Suites resolve against the
suites folder shipped with the pipelines (``integrity/data/expectations``) unless absolute.
"""

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from integrity.errors import UsageError
from integrity.intake.schedule import Schedule, parse_schedule_entry
from integrity.safeio import MAX_CONFIG_BYTES, parse_yaml, read_regular_file

CATALOG_VERSIONS = (1,)
Kind = Literal["dataset", "model"]
MODEL_FORMATS = ("pytorch", "safetensors", "onnx", "numpy", "auto")
PHI_ACTIONS = ("reject", "flag")
SCHEMES = ("file", "s3", "https", "http")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SOURCE_FIELDS = {
    "kind", "uri", "format", "signature", "policy_source", "license", "origin",
    "suite", "scan_profile", "phi", "baseline", "description", "probes", "extra_files", "schedule",
}  # fmt: skip
_TOP_FIELDS = {"version", "description", "policy", "root", "suites", "sources"}


class CatalogError(UsageError):
    """The catalog cannot be used as written; nothing was ingested."""

    kind = "catalog"
    advice = "Fix the catalog entry named above; the catalog format is described in integrity/intake/catalog.py."


@dataclass(frozen=True)
class Source:
    """One third-party artifact Cairn ingests."""

    name: str
    kind: Kind
    uri: str
    format: str
    signature: str | None
    policy_source: str
    license: str
    origin: str
    suite: Path | None = None
    scan_profile: str = "default"
    phi: str = "reject"
    baseline: str | None = None
    description: str = ""
    #: Models: the image dataset whose samples probe the backdoor scan (default: the first own image dataset).
    probes: str | None = None
    #: Datasets: reviewed shell patterns naming files of the drop that the format does not read (carried unread).
    extra_files: tuple[str, ...] = ()
    #: When Dagster ingests (and screens) the source on its own: a cron schedule, else only on demand or a drop.
    schedule: Schedule | None = None

    @property
    def key(self) -> str:
        """The name as a Dagster-safe identifier (letters, digits, underscores)."""
        return self.name.replace("-", "_")

    @property
    def scheme(self) -> str:
        return urlparse(self.uri).scheme or "file"

    def signature_uri(self, is_directory: bool) -> str:
        """Where the publisher's signature bundle is: absolute URI, or relative to the artifact."""
        name = self.signature
        if name is not None and ("://" in name or name.startswith("/")):
            return name
        base = self.uri.rstrip("/")
        if is_directory:
            return f"{base}/{name or 'model.sig'}"
        if name is None:
            return f"{base}.sig"
        parent = base.rsplit("/", 1)[0] if "/" in base else "."
        return f"{parent}/{name}"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "uri": self.uri,
            "format": self.format,
            "signature": self.signature,
            "policy_source": self.policy_source,
            "license": self.license,
            "origin": self.origin,
            "scan_profile": self.scan_profile,
        }
        if self.kind == "dataset":
            data["suite"] = str(self.suite) if self.suite else None
        if self.format == "dicom":
            data["phi"] = self.phi
        if self.baseline:
            data["baseline"] = self.baseline
        if self.extra_files:
            data["extra_files"] = list(self.extra_files)
        if self.schedule:
            data["schedule"] = {"cron": self.schedule.cron, "timezone": self.schedule.timezone}
        return data


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: sources by name, the trust policy it uses, and its own digest."""

    path: Path | None
    version: int
    digest: str
    root: Path
    policy_path: Path
    sources: Mapping[str, Source] = field(default_factory=dict)
    description: str = ""
    #: Entries that failed validation (only when parsed with ``strict=False``): name -> error.
    invalid: Mapping[str, CatalogError] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Source]:
        return iter(self.sources.values())

    def __len__(self) -> int:
        return len(self.sources)

    def source(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources)) or "none"
            raise CatalogError(f"no source {name!r} in the catalog (known: {known})", artifact=self.path) from None

    def resolve(self, uri: str) -> str:
        """A URI with relative file paths made absolute against the catalog root."""
        return resolve_uri(uri, self.root)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "version": self.version, "digest": self.digest}


def default_suites_dir() -> Path:
    """``$CAIRN_SUITES``, else the suites kept in the repository beside the pipelines."""
    from integrity.settings import current

    return current().suites


def resolve_uri(uri: str, root: Path) -> str:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        raw = parsed.path if parsed.scheme == "file" and parsed.netloc in ("", "localhost") else uri
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raw = parsed.netloc + parsed.path  # file://relative/path
        path = Path(raw)
        return "file://" + str(path if path.is_absolute() else (root / path).resolve())
    return uri


def _fail(path: Path | None, message: str) -> CatalogError:
    return CatalogError(message, artifact=path)


def _text(path: Path | None, where: str, entry: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = entry.get(name)
    if value is None:
        if required:
            raise _fail(path, f"{where}: missing required field {name!r}")
        return ""
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"{where}: field {name!r} must be a non-empty string")
    return value.strip()


def _parse_source(path: Path | None, name: Any, entry: Any, suites: Path) -> Source:
    where = f"source {name!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(path, f"{where}: names are lowercase letters, digits, '-' and '_' (at most 63)")
    if not isinstance(entry, Mapping):
        raise _fail(path, f"{where}: expected a mapping of fields")
    unknown = sorted(str(k) for k in set(entry) - _SOURCE_FIELDS)
    if unknown:
        listed = ", ".join(map(repr, unknown))
        raise _fail(path, f"{where}: unknown field(s) {listed}; allowed: {sorted(_SOURCE_FIELDS)}")
    kind = _text(path, where, entry, "kind")
    if kind not in ("dataset", "model"):
        raise _fail(path, f"{where}: kind must be 'dataset' or 'model', not {kind!r}")
    uri = _text(path, where, entry, "uri")
    scheme = urlparse(uri).scheme or "file"
    if scheme not in SCHEMES:
        raise _fail(path, f"{where}: URI scheme {scheme!r} is not supported (use file://, s3:// or https://)")
    if scheme == "s3" and not urlparse(uri).netloc:
        raise _fail(path, f"{where}: an s3:// URI needs a bucket")
    fmt = _text(path, where, entry, "format")
    from integrity.scans.datasets import dataset_formats

    allowed = dataset_formats() if kind == "dataset" else MODEL_FORMATS
    if fmt not in allowed:
        raise _fail(path, f"{where}: format {fmt!r} is not a {kind} format ({', '.join(allowed)})")
    signature = entry.get("signature")
    if signature is not None and (not isinstance(signature, str) or not signature.strip()):
        raise _fail(path, f"{where}: signature must be a path or URI")
    suite: Path | None = None
    if entry.get("suite") is not None:
        if kind != "dataset":
            raise _fail(path, f"{where}: only datasets have expectation suites")
        suite = Path(_text(path, where, entry, "suite"))
        suite = suite if suite.is_absolute() else suites / suite
        try:
            found = suite.is_file()
        except OSError as exc:
            raise _fail(path, f"{where}: expectation suite {str(suite)[:200]} cannot be looked up: "
                              f"{exc.strerror or exc}") from exc
        if not found:
            raise _fail(path, f"{where}: expectation suite {suite} does not exist")
    elif kind == "dataset":
        raise _fail(path, f"{where}: a dataset needs an expectation suite ('suite:')")
    phi = entry.get("phi", "reject")
    if phi not in PHI_ACTIONS:
        raise _fail(path, f"{where}: phi must be one of {PHI_ACTIONS}")
    if "phi" in entry and fmt != "dicom":
        raise _fail(path, f"{where}: 'phi' applies to DICOM sources only")
    baseline = entry.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", baseline)):
        raise _fail(path, f"{where}: baseline must be a trusted-store digest 'sha256:<64 hex>'")
    return Source(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        uri=uri,
        format=fmt,
        signature=signature.strip() if isinstance(signature, str) else None,
        policy_source=_text(path, where, entry, "policy_source", required=False) or name,
        license=_text(path, where, entry, "license"),
        origin=_text(path, where, entry, "origin"),
        suite=suite,
        scan_profile=_scan_profile(path, where, entry),
        phi=str(phi),
        baseline=baseline,
        description=_text(path, where, entry, "description", required=False),
        probes=_probes(path, where, entry, kind),
        extra_files=_extra_files(path, where, entry, kind),
        schedule=_schedule(path, where, entry),
    )


def _schedule(path: Path | None, where: str, entry: Mapping[str, Any]) -> Schedule | None:
    if entry.get("schedule") is None:
        return None
    try:
        return parse_schedule_entry(entry["schedule"], where=where)
    except UsageError as error:
        raise _fail(path, error.reason) from error


def _extra_files(path: Path | None, where: str, entry: Mapping[str, Any], kind: str) -> tuple[str, ...]:
    """Relative shell patterns of a dataset's files carried unread (each one reviewed: never a default)."""
    value = entry.get("extra_files")
    if value is None:
        return ()
    if kind != "dataset" or not isinstance(value, list) or not value:
        raise _fail(path, f"{where}: extra_files is a non-empty list of file patterns, for datasets only")
    for pattern in value:
        if (not isinstance(pattern, str) or not pattern.strip() or pattern.startswith("/") or "\\" in pattern
                or ".." in pattern.split("/") or any(ord(c) < 0x20 for c in pattern)):
            raise _fail(path, f"{where}: extra_files entry {pattern!r} must be a relative pattern (no '/' start, "
                              "'..' or backslash)")
    return tuple(pattern.strip() for pattern in value)


def _probes(path: Path | None, where: str, entry: Mapping[str, Any], kind: str) -> str | None:
    value = _text(path, where, entry, "probes", required=False) or None
    if value is not None and (kind != "model" or not _NAME.match(value)):
        raise _fail(path, f"{where}: probes names the image dataset (a source name) that probes a model's scan")
    return value


def _scan_profile(path: Path | None, where: str, entry: Mapping[str, Any]) -> str:
    """A registered ``scan_profile``: a typo would silently drop a screen, so it is refused."""
    from integrity.intake.scans import known_profiles

    profile = _text(path, where, entry, "scan_profile", required=False) or "default"
    if profile not in known_profiles():
        raise _fail(path, f"{where}: scan_profile {profile!r} is not registered (known: {', '.join(known_profiles())})")
    return profile


def _parse_catalog(text: bytes, *, path: Path | None = None, root: Path | None = None, strict: bool = True) -> Catalog:
    """Validate catalog YAML; every problem is a :class:`CatalogError` naming the entry.

    With ``strict=False`` a bad *entry* does not stop the others: it is left out of ``sources``
    and kept in ``invalid`` with its error, so the pipeline can quarantine it visibly while the
    rest of the catalog is ingested. Problems with the catalog as a whole always raise.
    """
    data = parse_yaml(text, artifact=path, error=CatalogError)
    if not isinstance(data, Mapping):
        raise _fail(path, "a catalog is a mapping with 'version', 'policy' and 'sources'")
    unknown = sorted(str(k) for k in set(data) - _TOP_FIELDS)
    if unknown:
        raise _fail(path, f"unknown top-level field(s) {', '.join(map(repr, unknown))}; allowed: {sorted(_TOP_FIELDS)}")
    version = data.get("version")
    if version not in CATALOG_VERSIONS:
        raise _fail(path, f"unsupported catalog version {version!r} (supported: {CATALOG_VERSIONS})")
    base = root if root is not None else cairn_home()
    if data.get("root") is not None:
        configured = Path(os.path.expandvars(str(data["root"])))
        anchor = path.parent if path is not None else Path.cwd()
        base = configured if configured.is_absolute() else (anchor / configured)
    base = base.resolve()
    suites = Path(str(data["suites"])) if data.get("suites") else default_suites_dir()
    if not suites.is_absolute() and path is not None:
        suites = path.parent / suites
    policy = data.get("policy")
    if not isinstance(policy, str) or not policy.strip():
        raise _fail(path, "missing 'policy': the trust policy file the sources are verified against")
    policy_path = Path(policy) if Path(policy).is_absolute() else base / policy
    entries = data.get("sources")
    if entries is None:
        entries = {}  # a new project's catalog: no sources yet
    if not isinstance(entries, Mapping):
        raise _fail(path, "'sources' must be a mapping of source name to entry")
    sources: dict[str, Source] = {}
    keys: dict[str, str] = {}
    invalid: dict[str, CatalogError] = {}
    for name, entry in entries.items():
        try:
            source = _parse_source(path, name, entry, suites)
        except CatalogError as error:
            if strict or not isinstance(name, str) or not _NAME.match(name):
                raise
            invalid[name] = error
            continue
        if source.key in keys:
            raise _fail(path, f"sources {keys[source.key]!r} and {name!r} differ only by '-' versus '_'")
        keys[source.key] = name
        sources[name] = source
    return Catalog(
        path=path,
        version=int(version),
        digest="sha256:" + hashlib.sha256(text).hexdigest(),
        root=base,
        policy_path=policy_path,
        sources=sources,
        description=str(data.get("description") or ""),
        invalid=invalid,
    )

def parse_catalog(text: bytes, *, path: Path | None = None, root: Path | None = None, strict: bool = True) -> Catalog:
    """Strict parse; on failure the error also lists every schema problem of the file (docs/schemas)."""
    try:
        return _parse_catalog(text, path=path, root=root, strict=strict)
    except CatalogError as error:
        if strict:
            from integrity.schemas import add_problems

            try:
                document = parse_yaml(text)
            except Exception:
                raise error from None
            add_problems(error, "catalog", document)
        raise


def load_catalog(path: str | Path, *, root: Path | None = None, strict: bool = True) -> Catalog:
    source = Path(path)
    text = read_regular_file(source, what="catalog", max_bytes=MAX_CONFIG_BYTES, error=CatalogError)
    return parse_catalog(text, path=source.resolve(), root=root, strict=strict)


def cairn_home() -> Path:
    """Project-local state: drops, work area, store, Dagster home (``$CAIRN_HOME``, default ``.cairn``)."""
    from integrity.settings import current

    return current().home
