"""Suites beyond the shorthand's basics: native GX suite JSON, regex/unique/length expectations,
thousands-separated numbers as a type, and label balance drift against a baseline the suite pins."""

import json
from pathlib import Path

import pytest

from integrity.errors import UsageError
from integrity.scans.datasets import validate_dataset
from integrity.scans.expectations import load_suite

ROWS = [("P000001", "1,234.5", "a"), ("P000002", "987.0", "a"), ("P000003", "12,001", "b"), ("P000004", "5", "a")]


def _csv(folder: Path, rows: list[tuple[str, ...]] = ROWS, header: str = "patient,amount,label") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.csv").write_text(header + "\n" + "\n".join(",".join(f'"{c}"' for c in r) for r in rows) + "\n")
    return folder


def _suite(tmp_path: Path, data: dict, name: str = "suite.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _failed(report) -> dict[str, str]:
    return {o.name: o.detail for o in report.outcomes if not o.passed and o.severity == "error"}


SHORTHAND = {
    "name": "payments",
    "columns": {"patient": {"type": "str", "regex": "^P[0-9]{6}$", "unique": True, "max_length": 7},
                "amount": {"type": "float", "min": 0, "thousands": ","},
                "label": {"type": "str", "values": ["a", "b"]}},
    "label": {"column": "label", "max_balance_drift": 0.2, "baseline": {"a": 0.75, "b": 0.25}},
}


def test_thousands_separated_numbers_are_a_type_and_misplaced_separators_still_drift(tmp_path: Path) -> None:
    report = validate_dataset(_csv(tmp_path / "ok"), format="csv", suite=_suite(tmp_path, SHORTHAND))
    assert report.passed, report.reason
    bad = _csv(tmp_path / "bad", [*ROWS, ("P000005", "1,23", "a")])
    failed = _failed(validate_dataset(bad, format="csv", suite=_suite(tmp_path, SHORTHAND)))
    assert "type_drift(amount)" in failed and "'1,23'" in failed["type_drift(amount)"]
    # Without `thousands`, the same separators are type drift (never silently coerced).
    plain = json.loads(json.dumps(SHORTHAND))
    del plain["columns"]["amount"]["thousands"]
    failed = _failed(validate_dataset(_csv(tmp_path / "ok2"), format="csv", suite=_suite(tmp_path, plain, "p.json")))
    assert "thousands separators" in failed["type_drift(amount)"]


def test_regex_unique_and_length_expectations_fail_by_name(tmp_path: Path) -> None:
    rows = [*ROWS, ("X1", "3", "a"), ("P000001", "4", "a"), ("P0000099", "5", "a")]
    failed = _failed(validate_dataset(_csv(tmp_path / "d", rows), format="csv", suite=_suite(tmp_path, SHORTHAND)))
    assert "expect_column_values_to_match_regex(patient)" in failed
    assert "X1" in failed["expect_column_values_to_match_regex(patient)"]
    assert "expect_column_values_to_be_unique(patient)" in failed
    assert "expect_column_value_lengths_to_be_between(patient)" in failed


def test_label_balance_against_the_pinned_baseline_says_which(tmp_path: Path) -> None:
    suite = _suite(tmp_path, SHORTHAND)
    report = validate_dataset(_csv(tmp_path / "first"), format="csv", suite=suite)
    drift = next(o for o in report.outcomes if o.name == "label_balance_drift")
    assert drift.passed and drift.detail.startswith("against the baseline suite payments pins")
    assert report.statistics["labels_compared_with"] == "the baseline suite payments pins"
    skewed = [("P00000" + str(i), "1", "b") for i in range(1, 8)] + [("P000008", "1", "a")]
    failed = _failed(validate_dataset(_csv(tmp_path / "skewed", skewed), format="csv", suite=suite))
    assert "against the baseline suite payments pins" in failed["label_balance_drift"]
    # An earlier version wins over the baseline, and is named.
    report = validate_dataset(_csv(tmp_path / "skewed2", skewed), format="csv", suite=suite,
                              previous=_csv(tmp_path / "skewed3", skewed), previous_name="the previous attested version")
    drift = next(o for o in report.outcomes if o.name == "label_balance_drift")
    assert drift.passed and drift.detail.startswith("against the previous attested version")
    # A first version with no baseline says it compared nothing (not silently skipped).
    no_baseline = json.loads(json.dumps(SHORTHAND))
    del no_baseline["label"]["baseline"]
    report = validate_dataset(_csv(tmp_path / "f2"), format="csv", suite=_suite(tmp_path, no_baseline, "n.json"))
    drift = next(o for o in report.outcomes if o.name == "label_balance_drift")
    assert drift.severity == "warning" and "pins no label.baseline" in drift.detail


def test_a_native_gx_suite_file_runs_as_gx_wrote_it(tmp_path: Path) -> None:
    from integrity.settings import quiet_third_party

    quiet_third_party()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context = gx.get_context(mode="ephemeral")
    suite = context.suites.add(gx.ExpectationSuite(name="native"))
    suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="patient", regex="^P[0-9]{6}$"))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=10))
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=2, max_value=100))
    path = _suite(tmp_path, suite.to_json_dict(), "native.json")  # exactly what GX writes
    spec = load_suite(path)
    assert spec.name == "native" and len(spec.native) == 3 and spec.infer_numbers
    rows = [("P000001", "3", "a"), ("P000002", "9.5", "b")]
    report = validate_dataset(_csv(tmp_path / "ok", rows, "patient,score,label"), format="csv", suite=path)
    assert report.passed, report.reason  # score read as numbers: every value is one
    rows = [("P000001", "3", "a"), ("bad", "11", "b")]
    failed = _failed(validate_dataset(_csv(tmp_path / "bad", rows, "patient,score,label"), format="csv", suite=path))
    assert set(failed) == {"expect_column_values_to_match_regex(patient)", "expect_column_values_to_be_between(score)"}


def test_native_expectations_beside_the_shorthand_and_cairn_keys_in_meta(tmp_path: Path) -> None:
    data = {**SHORTHAND, "expectations": [
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "amount", "min_value": 0, "max_value": 10}}]}
    failed = _failed(validate_dataset(_csv(tmp_path / "d"), format="csv", suite=_suite(tmp_path, data)))
    assert set(failed) == {"expect_column_mean_to_be_between(amount)"}  # the mean of 1234.5, 987, 12001, 5
    native = {"name": "n", "meta": {"cairn": {"columns": SHORTHAND["columns"], "label": SHORTHAND["label"]}},
              "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "label"}}]}
    report = validate_dataset(_csv(tmp_path / "e"), format="csv", suite=_suite(tmp_path, native, "n.json"))
    assert report.passed, report.reason  # thousands from meta.cairn: "1,234.5" is a number here
    assert report.statistics["labels_compared_with"] == "the baseline suite n pins"


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "s", "expectations": [{"type": "expect_no_such_thing", "kwargs": {}}]}, "Great Expectations refuses"),
    ({"name": "s", "expectations": [{"kwargs": {}}]}, "needs a 'type'"),
    ({"name": "s", "columns": {"a": {"type": "str", "regex": "("}}}, "does not compile"),
    ({"name": "s", "columns": {"a": {"type": "str", "thousands": ","}}}, "thousands must be"),
    ({"name": "s", "columns": {"a": {"type": "int", "thousands": "x"}}}, "thousands must be"),
    ({"name": "s", "columns": {"a": {"max_length": -1}}}, "non-negative"),
    ({"name": "s", "label": {"column": "a", "baseline": {"x": 0.5}}}, "add up to 0.500"),
    ({"name": "s", "label": {"column": "a", "baseline": {"x": "half"}}}, "maps each label"),
    ({"name": "s", "meta": {"cairn": {"colums": {}}}, "expectations": []}, "unknown key"),
])
def test_suite_mistakes_are_usage_errors(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        load_suite(_suite(tmp_path, data))
    assert caught.value.exit_code == 2 and "suite.json" in str(caught.value)
