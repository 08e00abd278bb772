"""Dataset validation on real data: GX suites, type drift, label balance drift, DICOM PHI."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from integrity.errors import ArtifactReadError, UsageError
from integrity.scans.datasets import validate_dataset
from integrity.scans.expectations import load_suite
from pipelines.staging import _write_breast_cancer, _write_dicom, _write_digits

SUITES = Path(__file__).resolve().parents[3] / "integrity" / "data" / "expectations"


@pytest.fixture(scope="module")
def breast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bc") / "breast-cancer"
    _write_breast_cancer(folder)
    return folder


def _edit_csv(source: Path, target: Path, edit) -> Path:
    rows = list(csv.reader(io.StringIO((source / "breast_cancer.csv").read_text())))
    edit(rows)
    target.mkdir(parents=True)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    (target / "breast_cancer.csv").write_text(out.getvalue())
    return target


def _validate(path: Path, suite: str, **kwargs):
    kwargs.setdefault("extra_files", ("LICENSE.txt", "README.txt"))  # the demo vendors' notices (demo.yaml)
    return validate_dataset(path, format=kwargs.pop("format", "csv"), suite=SUITES / f"{suite}.json", **kwargs)


def _failed(report) -> set[str]:
    return {o.name for o in report.outcomes if not o.passed and o.severity == "error"}


def test_real_breast_cancer_passes_with_data_docs(breast: Path, tmp_path: Path) -> None:
    report = _validate(breast, "breast_cancer", data_docs_dir=tmp_path / "docs")
    assert report.passed, report.reason
    assert report.statistics["rows"] == 569 and report.statistics["labels"]["1"] > 0.6
    assert report.data_docs and Path(report.data_docs).is_file()
    assert "breast_cancer" in Path(report.data_docs).read_text()
    assert not (Path.cwd() / "gx").exists()


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        ("drift", lambda rows: [r.__setitem__(23, f"{float(r[23]):,.1f}") for r in rows[1:]], "type_drift(worst area)"),
        ("range", lambda rows: rows[1].__setitem__(0, "999"), "expect_column_values_to_be_between(mean radius)"),
        ("null", lambda rows: rows[1].__setitem__(0, ""), "expect_column_values_to_not_be_null(mean radius)"),
        ("extra", lambda rows: [r.append("x") for r in rows], "expect_table_columns_to_match_ordered_list(all columns)"),
        ("duplicate", lambda rows: rows.append(list(rows[1])), "expect_compound_columns_to_be_unique(all columns)"),
        ("label", lambda rows: rows[1].__setitem__(30, "2"), "expect_column_values_to_be_in_set(target)"),
    ],
)
def test_each_suite_violation_is_named(breast: Path, tmp_path: Path, name: str, edit, expected: str) -> None:
    report = _validate(_edit_csv(breast, tmp_path / name, edit), "breast_cancer")
    assert not report.passed
    assert expected in _failed(report), report.reason


def test_type_drift_names_the_kind_and_examples(breast: Path, tmp_path: Path) -> None:
    drifted = _edit_csv(breast, tmp_path / "d", lambda rows: [r.__setitem__(23, f"{float(r[23]):,.1f}")
                                                               for r in rows[1:]])
    outcome = next(o for o in _validate(drifted, "breast_cancer").outcomes if o.name == "type_drift(worst area)")
    assert "thousands separators" in outcome.detail and "'2,019.0'" in outcome.detail


def test_label_balance_drift_against_previous_version(breast: Path, tmp_path: Path) -> None:
    def flip(rows: list[list[str]]) -> None:
        ones = [r for r in rows[1:] if r[30] == "1"]
        for row in ones[: int(len(ones) * 0.3)]:
            row[30] = "0"

    flipped = _edit_csv(breast, tmp_path / "flipped", flip)
    report = _validate(flipped, "breast_cancer", previous=breast)
    assert "label_balance_drift" in _failed(report)
    assert _validate(breast, "breast_cancer", previous=breast).passed


def test_digits_npy_passes_and_object_arrays_are_refused(tmp_path: Path) -> None:
    digits = tmp_path / "digits"
    _write_digits(digits)
    assert _validate(digits, "digits", format="npy").passed
    np.save(digits / "labels.npy", np.array([object()] * 1797), allow_pickle=True)
    report = _validate(digits, "digits", format="npy")
    assert not report.passed and "images_readable" in _failed(report) and "labels.npy" in report.reason


def test_dicom_phi_rejected_or_flagged(tmp_path: Path) -> None:
    clean, raw = tmp_path / "clean", tmp_path / "raw"
    _write_dicom(clean, deidentify=True)
    _write_dicom(raw, deidentify=False)
    assert _validate(clean, "dicom_ct_mr", format="dicom").passed
    rejected = _validate(raw, "dicom_ct_mr", format="dicom", phi="reject")
    assert not rejected.passed and "phi:PatientName" in _failed(rejected)
    assert "CompressedSamples" not in rejected.reason  # values are masked, never echoed
    flagged = _validate(raw, "dicom_ct_mr", format="dicom", phi="flag")
    assert flagged.passed and "flagged" in flagged.reason


def test_bad_suites_and_inputs_are_clear_errors(tmp_path: Path, breast: Path) -> None:
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "x", "colums": {}}))
    with pytest.raises(UsageError, match="unknown key"):
        load_suite(suite)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactReadError, match="no csv file"):
        _validate(empty, "breast_cancer")
    with pytest.raises(ArtifactReadError, match="no such dataset"):
        _validate(tmp_path / "missing", "breast_cancer")
