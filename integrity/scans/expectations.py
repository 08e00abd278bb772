"""Expectation suites: Cairn's shorthand or native Great Expectations suite JSON, run with GX 1.x.

A suite file is one of two things.

*Cairn's shorthand* (``docs/schemas/expectation-suite.schema.json``)::

    {"name": "breast_cancer",
     "columns": {"mean radius": {"type": "float", "min": 0, "max": 60, "thousands": ","},
                 "id": {"type": "str", "regex": "^P[0-9]{6}$", "unique": true, "max_length": 7},
                 "target": {"type": "int", "values": [0, 1]}},
     "label": {"column": "target", "values": [0, 1], "max_balance_drift": 0.1,
               "baseline": {"0": 0.37, "1": 0.63}},
     "expectations": [{"type": "expect_column_mean_to_be_between",
                       "kwargs": {"column": "mean radius", "min_value": 10, "max_value": 20}}]}

``thousands`` makes a column a thousands-separated number (``"1,234.5"`` is read as 1234.5; a
misplaced separator is still type drift). ``expectations`` adds native GX expectations as they are.

*A native GX suite*, as GX writes it (``{"name", "expectations": [{"type", "kwargs", "meta"}],
"meta", "id", "notes"}``; GX 0.x's ``expectation_type`` is read too). Cairn's shorthand keys may
ride along in ``meta.cairn`` (column types, label, images). Without declared types, a column whose
every value is a number is validated as numbers.

Every expectation is built when the suite is loaded: an unknown expectation type or bad arguments
is a usage error naming the suite, never a vendor's rejection.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import UsageError
from integrity.scans import suite_code

COLUMN_TYPES = ("float", "int", "str")
_SUITE_KEYS = {"name", "description", "columns", "exact_columns", "label", "expect_no_duplicate_rows", "row_count",
               "images", "expectations"}
#: The keys of a suite as GX itself writes it.
_NATIVE_KEYS = {"name", "id", "expectations", "meta", "notes", "suite_parameters", "data_asset_type",
                "expectation_suite_name", "ge_cloud_id"}
_IMAGES_KEYS = {"range", "channels"}
_COLUMN_KEYS = {"type", "min", "max", "nullable", "values", "regex", "unique", "min_length", "max_length",
                "thousands"}
_LABEL_KEYS = {"column", "values", "max_balance_drift", "baseline"}


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: str  # "error" fails the dataset; "warning" only flags it
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "severity": self.severity, "detail": self.detail}


@dataclass(frozen=True)
class ColumnSpec:
    type: str
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    values: tuple[Any, ...] | None = None
    regex: str | None = None
    unique: bool = False
    min_length: int | None = None
    max_length: int | None = None
    #: The thousands separator numbers of this column may carry (a thousands-separated number type).
    thousands: str | None = None


@dataclass(frozen=True)
class ExpectationSuiteSpec:
    name: str
    digest: str
    columns: Mapping[str, ColumnSpec]
    exact_columns: bool = True
    label_column: str | None = None
    label_values: tuple[Any, ...] | None = None
    max_balance_drift: float | None = None
    #: The label shares a first version is compared against (no earlier attested version exists).
    label_baseline: Mapping[str, float] | None = None
    no_duplicate_rows: bool = False
    row_count: tuple[int | None, int | None] | None = None
    #: Image datasets: the range pixel values are declared in (scaled to [0, 1] from it; never guessed).
    pixel_range: tuple[float, float] | None = None
    channels: tuple[int, ...] | None = None
    #: Native GX expectation configurations ({"type", "kwargs", "meta"}), run as they are.
    native: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    #: A native GX suite: undeclared columns whose every value is a number are validated as numbers.
    infer_numbers: bool = False


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
        except (OSError, ValueError, RecursionError):
            raise error from None
        if isinstance(document, dict) and not _is_native(document):
            add_problems(error, "expectation-suite", document)
        raise


def _is_native(data: Mapping[str, Any]) -> bool:
    return isinstance(data.get("expectations"), list) and set(data) <= _NATIVE_KEYS and (
        bool(set(data) & {"meta", "id", "notes"}) or not set(data) - {"name", "expectations"})


def _load_suite(path: Path) -> ExpectationSuiteSpec:
    raw = safeio.read_regular_file(path, what="expectation suite", max_bytes=safeio.MAX_CONFIG_BYTES, error=UsageError)
    return parse_suite(raw, where=path)


def parse_suite(raw: bytes, *, where: Path = Path("suite.json")) -> ExpectationSuiteSpec:
    """Parse and check a suite document from its bytes (``where`` names it in errors).

    Raises only :class:`~integrity.errors.UsageError` on a bad document (the fuzz entry point): every
    native expectation is checked as plain data (:mod:`integrity.scans.suite_code`) and built with GX.
    """
    path = where
    data = safeio.parse_json(raw, artifact=path, error=UsageError, what="expectation suite",
                             max_bytes=safeio.MAX_CONFIG_BYTES)
    if not isinstance(data, dict):
        raise UsageError("an expectation suite is a JSON object with a 'name'", artifact=path)
    native = _is_native(data)
    if native:  # GX's own suite; Cairn's shorthand may ride along in meta.cairn
        suite_code.check_suite_parameters(path, data.get("suite_parameters"))
        name = data.get("name") or data.get("expectation_suite_name")
        meta = data.get("meta") or {}
        shorthand = (meta.get("cairn") or {}) if isinstance(meta, dict) else None
        if not isinstance(shorthand, dict):
            raise UsageError("meta.cairn: expected an object of Cairn's suite keys", artifact=path)
        _unknown(path, "meta.cairn", shorthand, _SUITE_KEYS - {"name", "expectations"})
        data = {"exact_columns": False, **shorthand, "name": name, "expectations": data["expectations"]}
    if not isinstance(data.get("name"), str):
        raise UsageError("an expectation suite is a JSON object with a 'name'", artifact=path)
    _unknown(path, "suite", data, _SUITE_KEYS)
    columns = {name: _column(path, name, spec) for name, spec in _object(path, "columns", data).items()}
    label = _object(path, "label", data)
    _unknown(path, "label", label, _LABEL_KEYS)
    rows = _object(path, "row_count", data)
    _unknown(path, "row_count", rows, {"min", "max"})
    images = _object(path, "images", data)
    _unknown(path, "images", images, _IMAGES_KEYS)
    pixel_range = images.get("range")
    if pixel_range is not None and (not isinstance(pixel_range, list) or len(pixel_range) != 2
                                    or not all(isinstance(v, int | float) for v in pixel_range)
                                    or pixel_range[0] >= pixel_range[1]):
        raise UsageError("images.range must be [low, high] with low < high", artifact=path)
    channels = images.get("channels")
    if channels is not None and (not isinstance(channels, list) or not all(c in (1, 3, 4) for c in channels)):
        raise UsageError("images.channels must list channel counts (1, 3 or 4)", artifact=path)
    if label.get("values") is not None and not isinstance(label["values"], list):
        raise UsageError("label.values must be a list", artifact=path)
    if not isinstance(label.get("column"), str | None) or suite_code.number_problem(
            label.get("max_balance_drift")) or any(suite_code.number_problem(v) for v in rows.values()):
        raise UsageError("label.column is a name, label.max_balance_drift and row_count.min/max are numbers",
                         artifact=path)
    return ExpectationSuiteSpec(
        name=data["name"],
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        columns=columns,
        exact_columns=bool(data.get("exact_columns", True)),
        label_column=label.get("column"),
        label_values=tuple(label["values"]) if label.get("values") is not None else None,
        max_balance_drift=label.get("max_balance_drift"),
        label_baseline=_baseline(path, label.get("baseline")),
        no_duplicate_rows=bool(data.get("expect_no_duplicate_rows", False)),
        row_count=(rows.get("min"), rows.get("max")) if rows else None,
        pixel_range=(float(pixel_range[0]), float(pixel_range[1])) if pixel_range else None,
        channels=tuple(channels) if channels else None,
        native=_native_expectations(path, [] if data.get("expectations") is None else data["expectations"]),
        infer_numbers=native,
    )


def _object(path: Path, key: str, data: Mapping[str, Any]) -> dict[str, Any]:
    value = data.get(key)
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise UsageError(f"{key}: expected an object", artifact=path)
    return value


def _column(path: Path, name: str, spec: Any) -> ColumnSpec:
    if not isinstance(spec, dict):
        raise UsageError(f"column {name!r}: expected an object", artifact=path)
    _unknown(path, f"column {name!r}", spec, _COLUMN_KEYS)
    kind = spec.get("type", "str")
    if kind not in COLUMN_TYPES:
        raise UsageError(f"column {name!r}: type must be one of {COLUMN_TYPES}", artifact=path)
    regex = spec.get("regex")
    problem = None if regex is None else suite_code.regex_problem(regex) if isinstance(regex, str) else "not text"
    if problem is not None:
        raise UsageError(f"column {name!r}: regex {str(regex)[:100]!r}: {problem}", artifact=path)
    thousands = spec.get("thousands")
    if thousands is not None and (kind == "str" or thousands not in (",", ".", " ", "'", "_")):
        raise UsageError(f"column {name!r}: thousands must be one of , . space ' _ on a float or int column",
                         artifact=path)
    lengths = [spec.get("min_length"), spec.get("max_length")]
    if any(v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0) for v in lengths):
        raise UsageError(f"column {name!r}: min_length and max_length are non-negative integers", artifact=path)
    values = spec.get("values")
    if values is not None and not isinstance(values, list):
        raise UsageError(f"column {name!r}: values must be a list", artifact=path)
    if any(suite_code.number_problem(spec.get(k)) for k in ("min", "max")):
        raise UsageError(f"column {name!r}: min and max are numbers", artifact=path)
    return ColumnSpec(kind, spec.get("min"), spec.get("max"), bool(spec.get("nullable", False)),
                      tuple(values) if values is not None else None, regex, bool(spec.get("unique", False)),
                      lengths[0], lengths[1], thousands)


def _baseline(path: Path, value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in value.values()):
        raise UsageError("label.baseline maps each label to its share (0..1)", artifact=path)
    total = sum(float(v) for v in value.values())
    if abs(total - 1.0) > 0.01:
        raise UsageError(f"label.baseline shares add up to {total:.3f}, not 1", artifact=path)
    return {str(k): float(v) for k, v in value.items()}


def _native_expectations(path: Path, items: Any) -> tuple[dict[str, Any], ...]:
    """Each native expectation: plain data only (no code a backend evaluates), then built with GX now.

    Either check failing is a usage error naming the suite, the expectation and the argument.
    """
    if not isinstance(items, list):
        raise UsageError("expectations: expected a list of {type, kwargs}", artifact=path)
    if not items:
        return ()
    checked = [suite_code.check_native_expectation(path, index, item) for index, item in enumerate(items)]
    from integrity.settings import quiet_third_party

    quiet_third_party()
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    found = []
    for index, (kind, kwargs, meta) in enumerate(checked):
        try:
            ExpectationConfiguration(type=kind, kwargs=dict(kwargs)).to_domain_obj()
        except Exception as exc:  # GX raises many types; any of them means the suite is wrong
            raise UsageError(f"expectations[{index}] ({kind[:80]}): Great Expectations refuses it: "
                             f"{(str(exc).splitlines() or [''])[0][:300]}", artifact=path) from exc
        suite_code.check_expectation_type(path, index, kind)
        found.append({"type": kind, "kwargs": kwargs, "meta": meta})
    return tuple(found)


# -- Great Expectations ---------------------------------------------------------------------


def _expectations(suite: ExpectationSuiteSpec, columns: list[str]) -> list[Any]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    found: list[Any] = []
    if suite.exact_columns:
        found.append(gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(suite.columns)))
    if suite.row_count:
        found.append(gxe.ExpectTableRowCountToBeBetween(min_value=suite.row_count[0], max_value=suite.row_count[1]))
    for name, spec in suite.columns.items():
        if name not in columns:
            if not suite.exact_columns:  # nothing else reports it
                found.append(gxe.ExpectColumnToExist(column=name))
            continue  # else reported by the column-list expectation
        if not spec.nullable:
            found.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
        if spec.min is not None or spec.max is not None:
            found.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=spec.min, max_value=spec.max))
        if spec.values is not None:
            found.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(spec.values)))
        if spec.regex is not None:
            found.append(gxe.ExpectColumnValuesToMatchRegex(column=name, regex=spec.regex))
        if spec.unique:
            found.append(gxe.ExpectColumnValuesToBeUnique(column=name))
        if spec.min_length is not None or spec.max_length is not None:
            found.append(gxe.ExpectColumnValueLengthsToBeBetween(column=name, min_value=spec.min_length,
                                                                 max_value=spec.max_length))
    if suite.label_column and suite.label_values is not None and suite.label_column in columns:
        found.append(gxe.ExpectColumnDistinctValuesToBeInSet(column=suite.label_column,
                                                             value_set=list(suite.label_values)))
    if suite.no_duplicate_rows and columns:
        found.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns)))
    for index, item in enumerate(suite.native):  # checked at load; again here, by the same rules, before GX sees it
        suite_code.check_expectation_type(Path(suite.name), index,
                                          suite_code.check_native_expectation(Path(suite.name), index, item)[0])
        found.append(ExpectationConfiguration(type=item["type"], kwargs=dict(item["kwargs"]),
                                              meta=dict(item.get("meta") or {})).to_domain_obj())
    return found


def run_gx(
    frame: Any, suite: ExpectationSuiteSpec, data_docs_dir: Path | None
) -> tuple[list[CheckOutcome], str | None]:
    """Run the suite on the frame with an ephemeral GX context; Data Docs only into ``data_docs_dir``."""
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
            raised = (item.exception_info or {}).get("raised_exception") if isinstance(item.exception_info,
                                                                                        dict) else None
            detail = _describe_result(item.result, bool(item.success))
            if raised:  # an expectation that errored is a failure (fail closed), with GX's message
                detail = f"the expectation errored: {str(item.exception_info.get('exception_message'))[:200]}"
            outcomes.append(CheckOutcome(f"{config.type}({target})", bool(item.success) and not raised, "error",
                                         detail))
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
