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

Checks GX cannot express well are done here in pandas and reported the same way: *type drift*
(a numeric column whose cells are text such as ``"1,234.5"``: never silently coerced), *label
balance drift* against the pinned previous version of the dataset, and the DICOM *PHI* check.
A dataset that parses but breaks its suite is a failed :class:`ValidationReport`, not an error;
input that cannot be parsed at all raises :class:`ArtifactReadError`.
"""

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import ArtifactReadError, CairnError, UsageError

#: A dataset format's loader: (path, suite, phi policy) -> (frame, check outcomes, extra metadata).
Loader = Callable[[Path, "ExpectationSuiteSpec | None", str], tuple[Any, list["CheckOutcome"], dict[str, Any]]]
_FORMATS: dict[str, Loader] = {}


def register_dataset_format(name: str, loader: Loader) -> None:
    """Validate catalog sources of ``format: name`` with ``loader`` (see docs/extending.md)."""
    _FORMATS[name] = loader


def dataset_formats() -> tuple[str, ...]:
    """The dataset formats a catalog may name: the one list (catalog checks and validation share it)."""
    return tuple(sorted(_FORMATS))
COLUMN_TYPES = ("float", "int", "str")
_SUITE_KEYS = {"name", "description", "columns", "exact_columns", "label", "expect_no_duplicate_rows", "row_count",
               "images"}
_IMAGES_KEYS = {"range", "channels"}
_COLUMN_KEYS = {"type", "min", "max", "nullable", "values"}
_LABEL_KEYS = {"column", "values", "max_balance_drift"}
#: Header fields that identify a patient (or a person close to them) in DICOM.
PHI_FIELDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "OtherPatientIDs", "OtherPatientNames",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "ReferringPhysicianName", "InstitutionName",
    "InstitutionAddress", "AccessionNumber",
)  # fmt: skip
_PLACEHOLDERS = {"", "ANONYMIZED", "ANONYMISED", "ANONYMOUS", "REMOVED", "NONE", "UNKNOWN"}
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: str  # "error" fails the dataset; "warning" only flags it
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "severity": self.severity, "detail": self.detail}


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
        }


@dataclass(frozen=True)
class ColumnSpec:
    type: str
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    values: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class ExpectationSuiteSpec:
    name: str
    digest: str
    columns: Mapping[str, ColumnSpec]
    exact_columns: bool = True
    label_column: str | None = None
    label_values: tuple[Any, ...] | None = None
    max_balance_drift: float | None = None
    no_duplicate_rows: bool = False
    row_count: tuple[int | None, int | None] | None = None
    #: Image datasets: the range pixel values are declared in (scaled to [0, 1] from it; never guessed).
    pixel_range: tuple[float, float] | None = None
    channels: tuple[int, ...] | None = None


def _unknown(path: Path, where: str, keys: Any, allowed: set[str]) -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        raise UsageError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}; allowed: {sorted(allowed)}",
                         artifact=path)


def load_suite(path: Path) -> ExpectationSuiteSpec:
    """Read and strictly validate a suite file (unknown keys are errors, never ignored).

    On failure the error also lists every schema problem of the file (docs/schemas).
    """
    try:
        return _load_suite(path)
    except UsageError as error:
        from integrity.schemas import add_problems

        try:
            document = safeio.loads(Path(path).read_bytes())
        except (OSError, ValueError):
            raise error from None
        add_problems(error, "expectation-suite", document)
        raise


def _load_suite(path: Path) -> ExpectationSuiteSpec:
    try:
        raw = Path(path).read_bytes()
        data = safeio.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"unreadable expectation suite: {exc}", artifact=path) from exc
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise UsageError("an expectation suite is a JSON object with a 'name'", artifact=path)
    _unknown(path, "suite", data, _SUITE_KEYS)
    columns: dict[str, ColumnSpec] = {}
    for name, spec in (data.get("columns") or {}).items():
        if not isinstance(spec, dict):
            raise UsageError(f"column {name!r}: expected an object", artifact=path)
        _unknown(path, f"column {name!r}", spec, _COLUMN_KEYS)
        kind = spec.get("type", "str")
        if kind not in COLUMN_TYPES:
            raise UsageError(f"column {name!r}: type must be one of {COLUMN_TYPES}", artifact=path)
        values = spec.get("values")
        columns[name] = ColumnSpec(kind, spec.get("min"), spec.get("max"), bool(spec.get("nullable", False)),
                                   tuple(values) if values is not None else None)
    label = data.get("label") or {}
    _unknown(path, "label", label, _LABEL_KEYS)
    rows = data.get("row_count")
    if rows is not None:
        _unknown(path, "row_count", rows, {"min", "max"})
    images = data.get("images") or {}
    _unknown(path, "images", images, _IMAGES_KEYS)
    pixel_range = images.get("range")
    if pixel_range is not None and (not isinstance(pixel_range, list) or len(pixel_range) != 2
                                    or not all(isinstance(v, int | float) for v in pixel_range)
                                    or pixel_range[0] >= pixel_range[1]):
        raise UsageError("images.range must be [low, high] with low < high", artifact=path)
    channels = images.get("channels")
    if channels is not None and (not isinstance(channels, list) or not all(c in (1, 3, 4) for c in channels)):
        raise UsageError("images.channels must list channel counts (1, 3 or 4)", artifact=path)
    return ExpectationSuiteSpec(
        name=data["name"],
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        columns=columns,
        exact_columns=bool(data.get("exact_columns", True)),
        label_column=label.get("column"),
        label_values=tuple(label["values"]) if label.get("values") is not None else None,
        max_balance_drift=label.get("max_balance_drift"),
        no_duplicate_rows=bool(data.get("expect_no_duplicate_rows", False)),
        row_count=(rows.get("min"), rows.get("max")) if rows else None,
        pixel_range=(float(pixel_range[0]), float(pixel_range[1])) if pixel_range else None,
        channels=tuple(channels) if channels else None,
    )


# -- loading each format into a table ------------------------------------------------------


def _load_table(path: Path, suite: ExpectationSuiteSpec | None, fmt: str) -> tuple[Any, list[CheckOutcome]]:
    """Read every cell as text, then convert declared numeric columns, reporting type drift."""
    import pandas as pd

    from integrity.scans.images import read_files
    from integrity.scans.tables import read_table

    frame = read_table(read_files(path), fmt, where=path)
    outcomes: list[CheckOutcome] = []
    for name, spec in (suite.columns.items() if suite else ()):
        if name not in frame.columns or spec.type == "str":
            continue
        text = frame[name].astype(str).str.strip()
        blank = text == ""
        numbers = pd.to_numeric(text.where(~blank), errors="coerce")
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
    return frame, outcomes


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
                             "layout": images.layout, "classes": list(images.class_names)}
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


def _load_dicom(path: Path, phi: str) -> tuple[Any, list[CheckOutcome]]:
    import pandas as pd
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix == ".dcm")
    if not files:
        raise ArtifactReadError("no .dcm files in the drop", artifact=path)
    outcomes: list[CheckOutcome] = []
    rows = []
    severity = "error" if phi == "reject" else "warning"
    for file in files:
        relative = file.name if path.is_file() else str(file.relative_to(path))
        try:
            dataset = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            outcomes.append(CheckOutcome(f"dicom_parse({relative})", False, "error", f"not readable DICOM: {exc}"))
            continue
        for name in PHI_FIELDS:
            value = str(dataset.get(name, "") or "").strip()
            if value.strip("^* ").upper() not in _PLACEHOLDERS:
                outcomes.append(CheckOutcome(f"phi:{name}", False, severity,
                                             f"{relative}: {name} is present ({_mask(value)})"))
        rows.append({"file": relative, "Modality": str(dataset.get("Modality", "")),
                     "Rows": int(dataset.get("Rows", 0) or 0), "Columns": int(dataset.get("Columns", 0) or 0)})
    return pd.DataFrame(rows), outcomes


# -- Great Expectations ---------------------------------------------------------------------


def _expectations(suite: ExpectationSuiteSpec, columns: list[str]) -> list[Any]:
    import great_expectations.expectations as gxe

    found: list[Any] = []
    if suite.exact_columns:
        found.append(gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(suite.columns)))
    if suite.row_count:
        found.append(gxe.ExpectTableRowCountToBeBetween(min_value=suite.row_count[0], max_value=suite.row_count[1]))
    for name, spec in suite.columns.items():
        if name not in columns:
            continue  # reported by the column-list expectation
        if not spec.nullable:
            found.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
        if spec.min is not None or spec.max is not None:
            found.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=spec.min, max_value=spec.max))
        if spec.values is not None:
            found.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(spec.values)))
    if suite.label_column and suite.label_values is not None and suite.label_column in columns:
        found.append(gxe.ExpectColumnDistinctValuesToBeInSet(column=suite.label_column,
                                                             value_set=list(suite.label_values)))
    if suite.no_duplicate_rows and columns:
        found.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns)))
    return found


def _run_gx(
    frame: Any, suite: ExpectationSuiteSpec, data_docs_dir: Path | None
) -> tuple[list[CheckOutcome], str | None]:
    from integrity.settings import quiet_third_party

    quiet_third_party()
    import shutil

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # The ephemeral context makes a default docs site in a temp dir; Cairn writes only where asked.
    for site in list((context.variables.data_docs_sites or {}).values()):
        shutil.rmtree(site.get("store_backend", {}).get("base_directory", ""), ignore_errors=True)
    context.variables.data_docs_sites = {}
    batch_definition = (
        context.data_sources.add_pandas("cairn").add_dataframe_asset(suite.name)
        .add_batch_definition_whole_dataframe("all")
    )
    expectation_suite = context.suites.add(gx.ExpectationSuite(name=suite.name))
    for expectation in _expectations(suite, list(frame.columns)):
        expectation_suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=expectation_suite))
    actions = []
    if data_docs_dir is not None:
        data_docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(site_name="cairn", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(data_docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["cairn"]))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=suite.name, validation_definitions=[definition], actions=actions, result_format="SUMMARY"))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    outcomes = []
    for run in result.run_results.values():
        for item in run.results:
            config = item.expectation_config
            if config is None:
                raise UsageError("Great Expectations returned a result without its expectation")
            kwargs = {k: v for k, v in config.kwargs.items() if k in ("column", "column_list")}
            target = kwargs.get("column") or ("all columns" if "column_list" in kwargs else "table")
            outcomes.append(CheckOutcome(f"{config.type}({target})", bool(item.success), "error",
                                         _describe_result(item.result, bool(item.success))))
    docs = data_docs_dir / "index.html" if data_docs_dir is not None else None
    return outcomes, str(docs) if docs is not None and docs.is_file() else None


def _describe_result(result: Mapping[str, Any], success: bool) -> str:
    parts = []
    if result.get("observed_value") is not None:
        parts.append(f"observed {str(result['observed_value'])[:200]}")
    if result.get("unexpected_count"):
        parts.append(f"{result['unexpected_count']} unexpected of {result.get('element_count', '?')}")
        examples = [str(v) for v in (result.get("partial_unexpected_list") or [])[:5]]
        if examples:
            parts.append("examples: " + ", ".join(examples))
    return "; ".join(parts) or ("ok" if success else "failed")


# -- label balance ---------------------------------------------------------------------------


def _label_distribution(frame: Any, column: str) -> dict[str, float]:
    counts = frame[column].dropna().value_counts(normalize=True)
    return {str(k): round(float(v), 6) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def _balance_drift(current: dict[str, float], previous: dict[str, float], limit: float) -> CheckOutcome:
    """Compared in pandas: any class whose share moved by more than ``limit``, or appeared/vanished."""
    moved = {k: round(current.get(k, 0.0) - previous.get(k, 0.0), 6) for k in set(current) | set(previous)}
    worst = max(moved.items(), key=lambda kv: abs(kv[1])) if moved else ("-", 0.0)
    appeared = sorted(set(current) - set(previous))
    vanished = sorted(set(previous) - set(current))
    passed = abs(worst[1]) <= limit and not appeared and not vanished
    detail = f"largest shift {worst[1]:+.3f} for label {worst[0]} (limit {limit}); now {current}, before {previous}"
    if appeared or vanished:
        detail += f"; labels appeared {appeared}, vanished {vanished}"
    return CheckOutcome("label_balance_drift", passed, "error", detail)


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
        frame, outcomes = _load_table(path, suite, fmt)
        return frame, outcomes, {}

    return load


def _dicom(path: Path, suite: ExpectationSuiteSpec | None, phi: str
           ) -> tuple[Any, list[CheckOutcome], dict[str, Any]]:
    frame, outcomes = _load_dicom(path, phi)
    return frame, outcomes, {"files": len(frame)}


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
    phi: str = "reject",
    data_docs_dir: Path | None = None,
) -> ValidationReport:
    """Validate a dataset drop against its suite; ``previous`` is the pinned earlier version."""
    path = Path(path)
    if not path.exists():
        raise ArtifactReadError("no such dataset", artifact=path)
    spec = load_suite(suite) if suite is not None else None
    frame, outcomes, stats = _load(path, format, spec, phi)
    docs = None
    if spec is not None and len(frame.columns):
        gx_outcomes, docs = _run_gx(frame, spec, data_docs_dir)
        outcomes += gx_outcomes
    stats = {**stats, "rows": len(frame), "columns": len(frame.columns)}
    if spec is not None and spec.label_column and spec.label_column in frame.columns:
        current = _label_distribution(frame, spec.label_column)
        stats["labels"] = current
        if previous is not None and spec.max_balance_drift is not None:
            before_frame, _, _ = _load(Path(previous), format, spec, phi)
            if spec.label_column in before_frame.columns:
                before = _label_distribution(before_frame, spec.label_column)
                stats["labels_previous"] = before
                outcomes.append(_balance_drift(current, before, float(spec.max_balance_drift)))
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
    )
