"""Dataset validation: Great Expectations 1.x suites, type drift, label balance drift and DICOM PHI.

Suites are small JSON files kept in the repository, one per dataset, translated here into real
GX expectations and run with an ephemeral GX context (no ``gx/`` folder is ever written; Data
Docs go only where the caller says). Example suite::

    {"name": "breast_cancer",
     "columns": {"mean radius": {"type": "float", "min": 0, "max": 60, "nullable": false},
                 "target": {"type": "int", "values": [0, 1]}},
     "exact_columns": true,
     "label": {"column": "target", "values": [0, 1], "max_balance_drift": 0.1},
     "expect_no_duplicate_rows": true,
     "row_count": {"min": 100, "max": 100000}}

Suites (Cairn's shorthand or native GX JSON) are read by :mod:`integrity.scans.expectations`.
Checks GX cannot express well are done here in pandas and reported the same way: *type drift*
(a numeric column whose cells are text such as ``"1,234.5"``: never silently coerced, unless the
column declares ``thousands``), *label balance drift* against the previous attested version (or,
for a first version, the baseline the suite pins; the outcome says which), and the DICOM *PHI* check.
A dataset that parses but breaks its suite is a failed :class:`ValidationReport`, not an error;
input that cannot be parsed at all raises :class:`ArtifactReadError`.

**Every file of a drop is read by its format** or the drop fails (``every_file_read``): a loader
says what it read in its metadata (``read_files``), the drop's own signature bundle is left out,
and the catalog's reviewed ``extra_files`` patterns name files carried unread, which the report
lists (``unread_files``). DICOM is recognised by content (the ``DICM`` marker after the 128-byte
preamble), whatever the file is called, so the PHI check sees every DICOM file of the drop.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from integrity.errors import ArtifactReadError, CairnError, UsageError
from integrity.scans.expectations import (
    CheckOutcome,
    ExpectationSuiteSpec,
    load_suite,
    run_gx,
)

#: A dataset format's loader: (path, suite, phi policy) -> (frame, check outcomes, extra metadata).
Loader = Callable[[Path, "ExpectationSuiteSpec | None", str], tuple[Any, list["CheckOutcome"], dict[str, Any]]]
_FORMATS: dict[str, Loader] = {}


def register_dataset_format(name: str, loader: Loader) -> None:
    """Validate catalog sources of ``format: name`` with ``loader`` (see docs/extending.md)."""
    _FORMATS[name] = loader


def dataset_formats() -> tuple[str, ...]:
    """The dataset formats a catalog may name: the one list (catalog checks and validation share it)."""
    return tuple(sorted(_FORMATS))
#: Header fields that identify a patient (or a person close to them) in DICOM.
PHI_FIELDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "OtherPatientIDs", "OtherPatientNames",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "ReferringPhysicianName", "InstitutionName",
    "InstitutionAddress", "AccessionNumber",
)  # fmt: skip
_PLACEHOLDERS = {"", "ANONYMIZED", "ANONYMISED", "ANONYMOUS", "REMOVED", "NONE", "UNKNOWN"}
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")
#: A DICOM Part 10 file: a 128-byte preamble, then this marker.
DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"



@dataclass(frozen=True)
class ValidationReport:
    artifact: str
    format: str
    passed: bool
    reason: str
    outcomes: tuple[CheckOutcome, ...]
    statistics: dict[str, Any] = field(default_factory=dict)
    suite: str | None = None
    suite_digest: str | None = None
    data_docs: str | None = None
    #: Files of the drop carried unread because the catalog's reviewed ``extra_files`` names them.
    unread_files: tuple[str, ...] = ()
    extra_files: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "format": self.format,
            "passed": self.passed,
            "reason": self.reason,
            "outcomes": [o.as_dict() for o in self.outcomes],
            "statistics": self.statistics,
            "suite": self.suite,
            "suite_digest": self.suite_digest,
            "data_docs": self.data_docs,
            "unread_files": list(self.unread_files),
            "extra_files": list(self.extra_files),
        }


# -- loading each format into a table ------------------------------------------------------


def _load_table(path: Path, suite: ExpectationSuiteSpec | None, fmt: str
                ) -> tuple[Any, list[CheckOutcome], list[str]]:
    """Read every cell as text, then convert declared numeric columns, reporting type drift (and the files read)."""
    import pandas as pd

    from integrity.scans.images import read_files
    from integrity.scans.tables import read_table, table_files

    files = read_files(path)
    frame = read_table(files, fmt, where=path)
    outcomes: list[CheckOutcome] = []
    for name, spec in (suite.columns.items() if suite else ()):
        if name not in frame.columns or spec.type == "str":
            continue
        text = frame[name].astype(str).str.strip()
        blank = text == ""
        parsed = text
        if spec.thousands:  # a thousands-separated number type: separators only between groups of three
            grouped = text.str.fullmatch(_grouped(spec.thousands))
            parsed = text.where(~grouped, text.str.replace(spec.thousands, "", regex=False))
        numbers = pd.to_numeric(parsed.where(~blank), errors="coerce")
        bad = numbers.isna() & ~blank
        if spec.type == "int":
            bad |= (~numbers.isna()) & (numbers != numbers.round())
        if bad.any():
            examples = list(dict.fromkeys(text[bad].tolist()))[:5]
            kinds = sorted({_drift_kind(v) for v in examples})
            outcomes.append(CheckOutcome(
                f"type_drift({name})", False, "error",
                f"{int(bad.sum())} of {len(text)} values are not {spec.type} ({', '.join(kinds)}); "
                f"examples: {', '.join(map(repr, examples))}"))
        frame[name] = numbers.where(~bad)
    if suite is not None and suite.infer_numbers:  # a native GX suite declares no types: numbers stay numbers
        for name in frame.columns:
            if name in suite.columns:
                continue
            text = frame[name].astype(str).str.strip()
            blank = text == ""
            numbers = pd.to_numeric(text.where(~blank), errors="coerce")
            if (~blank).any() and not (numbers.isna() & ~blank).any():
                frame[name] = numbers
    return frame, outcomes, table_files(files, fmt, path)


def _grouped(separator: str) -> str:
    """A number whose integer part is grouped in threes by ``separator`` (the decimal mark is the other one)."""
    sep = re.escape(separator)
    decimal = "," if separator == "." else r"\."
    return rf"[-+]?\d{{1,3}}({sep}\d{{3}})+({decimal}\d+)?"


def _drift_kind(value: str) -> str:
    if _THOUSANDS.match(value):
        return "thousands separators"
    if value.endswith("%"):
        return "percent sign"
    if value[:1] in "$€£¥":
        return "currency symbol"
    return "text"


def _load_images(path: Path, suite: ExpectationSuiteSpec | None) -> tuple[Any, list[CheckOutcome], dict[str, Any]]:
    """Per-image rows (label, pixel min/max/mean in stored units) and the image checks of the suite."""
    import numpy as np
    import pandas as pd

    from integrity.scans.images import declared_range, read_files, read_images

    try:
        images = read_images(read_files(path), where=path)
    except ArtifactReadError as error:  # unreadable or refused content fails validation, naming why
        if not path.exists():
            raise
        return pd.DataFrame(), [CheckOutcome("images_readable", False, "error", error.summary())], {}
    outcomes = []
    flat = images.images.reshape(len(images.images), -1).astype("float64")
    stats: dict[str, Any] = {"images_shape": [len(images.images), *images.shape], "images_dtype": images.dtype,
                             "layout": images.layout, "classes": list(images.class_names),
                             "read_files": list(images.read)}
    try:
        low, high = declared_range(images.images, suite.pixel_range if suite else None, images.dtype, where=path)
        stats["pixel_range"] = [low, high]
        outcomes.append(CheckOutcome("pixel_range", True, "error", f"values within {low:g}..{high:g}"))
    except CairnError as error:
        outcomes.append(CheckOutcome("pixel_range", False, "error", error.summary()))
    if suite is not None and suite.channels is not None:
        channels = images.shape[0]
        outcomes.append(CheckOutcome("channels", channels in suite.channels, "error",
                                     f"{channels} channel(s); the suite allows {list(suite.channels)}"))
    names = np.asarray(images.class_names)[images.labels]
    label: Any = names.astype(np.int64) if all(n.lstrip("-").isdigit() for n in images.class_names) else names
    frame = pd.DataFrame({"label": label, "pixel_min": flat.min(axis=1), "pixel_max": flat.max(axis=1),
                          "pixel_mean": flat.mean(axis=1)})
    return frame, outcomes, stats


def _mask(value: str) -> str:
    return value[:1] + "***" if value else ""


def is_dicom(path: Path) -> bool:
    """DICOM by content: the ``DICM`` marker after the 128-byte preamble (the name never decides)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    except OSError as exc:
        raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=path) from exc
    return head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC


def _load_dicom(path: Path, phi: str) -> tuple[Any, list[CheckOutcome], list[str]]:
    """Every file that is DICOM by content, whatever its name, header-checked for PHI; also the files read."""
    import pandas as pd
    import pydicom
    from pydicom.errors import InvalidDicomError

    from integrity.scans.images import dataset_files

    files = {name: file for name, file in dataset_files(path).items() if is_dicom(file)}
    if not files:
        raise ArtifactReadError("no DICOM file (a 128-byte preamble, then DICM) in the drop", artifact=path)
    outcomes: list[CheckOutcome] = []
    rows = []
    severity = "error" if phi == "reject" else "warning"
    for relative, file in sorted(files.items()):
        try:
            meta = pydicom.filereader.read_file_meta_info(file)
            if meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian:
                raise ValueError("a deflated data set is inflated whole, unbounded: refused")
            dataset = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            outcomes.append(CheckOutcome(f"dicom_parse({relative})", False, "error", f"not readable DICOM: {exc}"))
            continue
        for name in PHI_FIELDS:
            value = str(dataset.get(name, "") or "").strip()
            if value.strip("^* ").upper() not in _PLACEHOLDERS:
                outcomes.append(CheckOutcome(f"phi:{name}", False, severity,
                                             f"{relative}: {name} is present ({_mask(value)})"))
        rows.append({"file": relative, "Modality": str(dataset.get("Modality", "")),
                     "Rows": int(dataset.get("Rows", 0) or 0), "Columns": int(dataset.get("Columns", 0) or 0)})
    return pd.DataFrame(rows), outcomes, sorted(files)


# -- label balance ---------------------------------------------------------------------------


def _label_key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label_distribution(frame: Any, column: str) -> dict[str, float]:
    counts = frame[column].dropna().value_counts(normalize=True)
    return {_label_key(k): round(float(v), 6) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def _balance_drift(current: dict[str, float], previous: dict[str, float], limit: float,
                   against: str) -> CheckOutcome:
    """Compared in pandas: any class whose share moved by more than ``limit``, or appeared/vanished."""
    moved = {k: round(current.get(k, 0.0) - previous.get(k, 0.0), 6) for k in set(current) | set(previous)}
    worst = max(moved.items(), key=lambda kv: abs(kv[1])) if moved else ("-", 0.0)
    appeared = sorted(set(current) - set(previous))
    vanished = sorted(set(previous) - set(current))
    passed = abs(worst[1]) <= limit and not appeared and not vanished
    detail = (f"against {against}: largest shift {worst[1]:+.3f} for label {worst[0]} (limit {limit}); "
              f"now {current}, there {previous}")
    if appeared or vanished:
        detail += f"; labels appeared {appeared}, vanished {vanished}"
    return CheckOutcome("label_balance_drift", passed, "error", detail)


def _label_balance(current: dict[str, float], spec: ExpectationSuiteSpec, stats: dict[str, Any],
                   previous: Path | None, previous_name: str, fmt: str, phi: str) -> CheckOutcome:
    """Drift against the earlier version, else the suite's pinned baseline; a first version without one says so."""
    limit = float(spec.max_balance_drift or 0.0)
    if previous is not None:
        before_frame, _, _ = _load(Path(previous), fmt, spec, phi)
        if spec.label_column in before_frame.columns:
            before = _label_distribution(before_frame, str(spec.label_column))
            stats["labels_previous"], stats["labels_compared_with"] = before, previous_name
            return _balance_drift(current, before, limit, previous_name)
    if spec.label_baseline is not None:
        against = f"the baseline suite {spec.name} pins"
        stats["labels_baseline"], stats["labels_compared_with"] = dict(spec.label_baseline), against
        return _balance_drift(current, dict(spec.label_baseline), limit, against)
    stats["labels_compared_with"] = "nothing (first version, no baseline pinned)"
    return CheckOutcome("label_balance_drift", True, "warning",
                        f"not compared: a first version, and suite {spec.name} pins no label.baseline")


# -- entry point ---------------------------------------------------------------------------


def _load(path: Path, fmt: str, suite: ExpectationSuiteSpec | None, phi: str
          ) -> tuple[Any, list[CheckOutcome], dict[str, Any]]:
    loader = _FORMATS.get(fmt)
    if loader is None:
        raise UsageError(f"unknown dataset format {fmt!r} (known: {', '.join(dataset_formats())})", artifact=path)
    return loader(path, suite, phi)


def _table(fmt: str) -> Loader:
    def load(path: Path, suite: ExpectationSuiteSpec | None, phi: str
             ) -> tuple[Any, list[CheckOutcome], dict[str, Any]]:
        frame, outcomes, read = _load_table(path, suite, fmt)
        return frame, outcomes, {"read_files": read}

    return load


def _dicom(path: Path, suite: ExpectationSuiteSpec | None, phi: str
           ) -> tuple[Any, list[CheckOutcome], dict[str, Any]]:
    frame, outcomes, read = _load_dicom(path, phi)
    return frame, outcomes, {"files": len(frame), "read_files": read}


for _fmt in ("csv", "tsv", "jsonl", "parquet"):
    register_dataset_format(_fmt, _table(_fmt))
for _fmt in ("npy", "npz", "image-folder"):  # one reader recognises each layout (integrity.scans.images)
    register_dataset_format(_fmt, lambda path, suite, phi: _load_images(path, suite))
register_dataset_format("dicom", _dicom)


def validate_dataset(
    path: Path,
    *,
    format: str,
    suite: Path | None = None,
    previous: Path | None = None,
    previous_name: str = "the previous version",
    phi: str = "reject",
    data_docs_dir: Path | None = None,
    extra_files: Sequence[str] = (),
    signature: str | None = None,
) -> ValidationReport:
    """Validate a dataset drop against its suite.

    Label balance is compared with ``previous`` (an earlier version: ``previous_name`` says which),
    else with the baseline the suite pins (``label.baseline``); the outcome names what it compared to.
    Every file must be read by the format, except the drop's own ``signature`` bundle (its relative
    name) and files matching an ``extra_files`` pattern (reviewed, carried unread and listed).
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactReadError("no such dataset", artifact=path)
    spec = load_suite(suite) if suite is not None else None
    frame, outcomes, stats = _load(path, format, spec, phi)
    unread: tuple[str, ...] = ()
    read = stats.pop("read_files", None)
    if read is not None or not any(not o.passed and o.severity == "error" for o in outcomes):
        check, unread = every_file_read(path, read or (), extra_files, signature)
        outcomes.insert(0, check)
        stats["files_read"] = len(read or ())
        if unread:
            stats["unread_files"] = list(unread)
    docs = None
    if spec is not None and len(frame.columns):
        gx_outcomes, docs = run_gx(frame, spec, data_docs_dir)
        outcomes += gx_outcomes
    stats = {**stats, "rows": len(frame), "columns": len(frame.columns)}
    if spec is not None and spec.label_column and spec.label_column in frame.columns:
        current = _label_distribution(frame, spec.label_column)
        stats["labels"] = current
        if spec.max_balance_drift is not None:
            outcomes.append(_label_balance(current, spec, stats, previous, previous_name, format, phi))
    failed = [o for o in outcomes if not o.passed and o.severity == "error"]
    flagged = [o for o in outcomes if not o.passed and o.severity == "warning"]
    if failed:
        reason = "failed: " + "; ".join(f"{o.name}: {o.detail}" for o in failed[:3])
        if len(failed) > 3:
            reason += f"; and {len(failed) - 3} more"
    else:
        reason = f"passed {len(outcomes)} checks" + (f" ({len(flagged)} flagged)" if flagged else "")
    return ValidationReport(
        artifact=str(path),
        format=format,
        passed=not failed,
        reason=reason[:1500],
        outcomes=tuple(outcomes),
        statistics=stats,
        suite=spec.name if spec else None,
        suite_digest=spec.digest if spec else None,
        data_docs=docs,
        unread_files=unread,
        extra_files=tuple(extra_files),
    )


def every_file_read(path: Path, read: Sequence[str], extra_files: Sequence[str] = (), signature: str | None = None
                    ) -> tuple[CheckOutcome, tuple[str, ...]]:
    """The ``every_file_read`` outcome, and the files carried unread under ``extra_files`` (shell patterns on
    the whole relative name, ``*`` also crossing ``/``). A file neither read nor listed fails the drop."""
    from integrity.scans.images import dataset_files

    done = set(read)
    left = [n for n in sorted(dataset_files(path)) if n not in done and n != signature]
    carried = tuple(n for n in left if any(fnmatchcase(n, pattern) for pattern in extra_files))
    refused = [n for n in left if n not in carried]
    if refused:
        shown = ", ".join(map(repr, refused[:5])) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        return CheckOutcome("every_file_read", False, "error",
                            f"{len(refused)} file(s) the format reader never read: {shown}; "
                            "a file that is not data must be named in the catalog's reviewed extra_files"), carried
    detail = f"{len(done)} file(s) read" + (f", {len(carried)} carried unread by extra_files" if carried else "")
    return CheckOutcome("every_file_read", True, "error", detail), carried
