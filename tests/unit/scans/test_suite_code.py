"""Issue 25, suites: a native GX expectation may carry code its backend evaluates; Cairn refuses it.

A pandas ``row_condition`` goes to ``DataFrame.query``, where ``@`` reaches Python. These tests show
the attack is real with Great Expectations 1.x itself, then that every evaluation path GX has (the
pandas parser, condition objects, the ``great_expectations`` parser, SQL text, suite parameters) is
refused at load, as a usage error naming the suite, the expectation and the argument, in
``cairn catalog check`` and in ``cairn ingest run`` alike, while plain expectations still run.
"""

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from integrity.errors import CairnError, UsageError
from integrity.scans.datasets import validate_dataset
from integrity.scans.expectations import load_suite, parse_suite
from integrity.scans.suite_code import PLAIN_ARGUMENTS, regex_problem


def _attack(marker: Path) -> str:
    return f"@pd.core.frame.com.builtins.__import__('os').system('touch {marker}') == 0"


def _csv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.csv").write_text("patient,score\nP000001,3\nP000002,9.5\n")
    return folder


def _suite(tmp_path: Path, data: Any, name: str = "suite.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _shorthand(*expectations: dict[str, Any]) -> dict[str, Any]:
    return {"name": "s", "exact_columns": False, "expectations": list(expectations)}


def _refused(tmp_path: Path, data: Any, *words: str) -> UsageError:
    path = _suite(tmp_path, data)
    with pytest.raises(UsageError) as caught:
        load_suite(path)
    error = caught.value
    assert error.exit_code == 2 and error.artifact == str(path), error
    for word in words:
        assert word in error.reason, (word, error.reason)
    return error


def test_the_attack_is_real_in_great_expectations_itself(tmp_path: Path) -> None:
    """Without Cairn's check, GX 1.x runs the row condition's Python on a pandas frame."""
    from integrity.settings import quiet_third_party

    quiet_third_party()
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd

    marker = tmp_path / "marker"
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    expectation = gxe.ExpectColumnValuesToNotBeNull(column="score", row_condition=_attack(marker),
                                                    condition_parser="pandas")
    batch.get_batch(batch_parameters={"dataframe": pd.DataFrame({"score": [1, 2]})}).validate(expectation)
    assert marker.exists()


def test_the_pandas_row_condition_attack_is_refused_at_load_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    attack = {"type": "expect_column_values_to_not_be_null",
              "kwargs": {"column": "score", "row_condition": _attack(marker), "condition_parser": "pandas"}}
    error = _refused(tmp_path, _shorthand(attack), "expectations[0]", "'row_condition'",
                     "row conditions are evaluated as code by the backend", "Cairn refuses")
    assert "expect_column_values_to_not_be_null" in error.reason
    with pytest.raises(UsageError):
        validate_dataset(_csv(tmp_path / "d"), format="csv", suite=tmp_path / "suite.json")
    assert not marker.exists()


@pytest.mark.parametrize("kwargs", [
    # GX's own grammar (pyparsing: col("x") > 3), which the SQL and Spark engines translate into filters.
    {"column": "score", "row_condition": 'col("score") > 3', "condition_parser": "great_expectations"},
    {"column": "score", "row_condition": 'col("score")>3', "condition_parser": "great_expectations__experimental__"},
    {"column": "score", "row_condition": "score > 3", "condition_parser": "python"},
    {"column": "score", "row_condition": "score > 3", "condition_parser": "spark"},
    # GX 1.x condition objects: a pass-through string goes to DataFrame.query as it is; a comparison is
    # rendered into a query string; both are refused, as is a parser without a condition.
    {"column": "score", "row_condition": {"type": "pass_through", "pass_through_filter": "@pd.io"}},
    {"column": "score", "row_condition": {"type": "comparison", "column": {"name": "score"}, "operator": ">",
                                          "parameter": 3}},
    {"column": "score", "condition_parser": "pandas"},
])
def test_every_row_condition_path_is_refused(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    arg = "row_condition" if "row_condition" in kwargs else "condition_parser"
    _refused(tmp_path, _shorthand({"type": "expect_column_values_to_not_be_null", "kwargs": kwargs}),
             f"argument {arg!r}", "evaluated as code by the backend")


@pytest.mark.parametrize(("kind", "kwargs", "argument"), [
    ("unexpected_rows_expectation", {"unexpected_rows_query": "SELECT * FROM {batch} WHERE 1=1"},
     "unexpected_rows_query"),
    ("expect_query_results_to_match_comparison", {"base_query": "SELECT 1", "comparison_query": "SELECT 1",
                                                  "comparison_data_source_name": "x"}, "base_query"),
    ("expect_table_row_count_to_equal_other_table", {"other_table_name": "users"}, "other_table_name"),
    ("expect_column_values_to_match_json_schema", {"column": "score", "json_schema": {"$ref": "http://x/"}},
     "json_schema"),
])
def test_sql_text_and_code_bearing_expectations_are_refused(tmp_path: Path, kind: str, kwargs: dict[str, Any],
                                                            argument: str) -> None:
    _refused(tmp_path, _shorthand({"type": kind, "kwargs": kwargs}), f"argument {argument!r}", "Cairn refuses")


def test_expectation_types_outside_the_allowlist_are_refused(tmp_path: Path) -> None:
    """A LIKE pattern is SQL-only (it would error on pandas and be recorded against the vendor); a plugin class
    that GX knows is not a core expectation Cairn has reviewed."""
    _refused(tmp_path, _shorthand({"type": "expect_column_values_to_match_like_pattern",
                                   "kwargs": {"column": "patient", "like_pattern": "P%"}}),
             "like_pattern")

    from integrity.settings import quiet_third_party

    quiet_third_party()
    import great_expectations.expectations as gxe

    class ExpectColumnToExistCairnPlugin(gxe.ExpectColumnToExist):  # registers itself with GX, as a plugin does
        pass

    _refused(tmp_path, _shorthand({"type": "expect_column_to_exist_cairn_plugin", "kwargs": {"column": "a"}}),
             "Cairn does not run this expectation type", "custom expectation class")


def test_an_unknown_argument_is_refused_even_if_harmless(tmp_path: Path) -> None:
    _refused(tmp_path, _shorthand({"type": "expect_column_to_exist", "kwargs": {"column": "a", "future_arg": 1}}),
             "argument 'future_arg' is not one Cairn accepts", "evaluated as code")
    for name in ("result_format", "catch_exceptions", "include_config", "batch_id", "notes", "description", "meta",
                 "severity", "id", "rendered_content"):
        _refused(tmp_path, _shorthand({"type": "expect_column_to_exist", "kwargs": {"column": "a", name: None}}),
                 f"argument {name!r}")


def test_a_harmless_native_expectation_is_accepted_and_runs(tmp_path: Path) -> None:
    suite = _suite(tmp_path, {"name": "n", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "score", "min_value": 0,
                                                                  "max_value": 5, "mostly": 0.4}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "patient", "regex": "^P[0-9]{6}$"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "patient", "value_set": ["P000001"]}},
    ]})
    assert len(load_suite(suite).native) == 3
    report = validate_dataset(_csv(tmp_path / "d"), format="csv", suite=suite)
    failed = {o.name for o in report.outcomes if not o.passed}
    assert failed == {"expect_column_values_to_be_in_set(patient)"}, report.outcomes


# -- as an attacker ------------------------------------------------------------------------------------------


def _native(item: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "n", "meta": {}, "expectations": [item], **extra}


ROW = {"column": "score", "row_condition": "@pd.io", "condition_parser": "pandas"}


@pytest.mark.parametrize(("data", "words"), [
    # in a native GX suite file, as GX writes it
    (_native({"type": "expect_column_values_to_not_be_null", "kwargs": ROW, "meta": {}, "id": None,
              "notes": None, "description": None, "severity": "critical"}), ["'row_condition'"]),
    # outside kwargs, at the expectation's level (GX would ignore it; Cairn refuses it)
    (_native({"type": "expect_column_to_exist", "kwargs": {"column": "a"}, "row_condition": "@pd.io"}),
     ["key 'row_condition'"]),
    # an upper- or mixed-case key, and a fullwidth one (NFKC folds it): named as code
    (_shorthand({"type": "expect_column_to_exist", "kwargs": {"column": "a", "Row_Condition": "@pd.io"}}),
     ["'Row_Condition'", "evaluated as code"]),
    (_shorthand({"type": "expect_column_to_exist", "kwargs": {"column": "a", "\uff52\uff4f\uff57_condition": "@pd.io"}}),
     ["evaluated as code"]),
    # a homoglyph (dotless i): not folded, refused as unknown
    (_shorthand({"type": "expect_column_to_exist", "kwargs": {"column": "a", "row_cond\u0131tion": "@pd.io"}}),
     ["is not one Cairn accepts"]),
    # a $PARAMETER reference (GX's expression evaluator) and suite parameters
    (_shorthand({"type": "expect_column_max_to_be_between",
                 "kwargs": {"column": "score", "max_value": {"$PARAMETER": "9^9^9^9"}}}), ["$PARAMETER"]),
    (_native({"type": "expect_column_to_exist", "kwargs": {"column": "a"}}, suite_parameters={"x": "now()"}),
     ["suite_parameters"]),
    # a nested value where a plain one belongs
    (_shorthand({"type": "expect_column_values_to_be_in_set",
                 "kwargs": {"column": "a", "value_set": [{"$PARAMETER": "x"}]}}), ["value_set", "item 0"]),
    (_shorthand({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "a", "value_set": [[[[1]]]]}}),
     ["value_set"]),
    # a type name GX looks up on pandas
    (_shorthand({"type": "expect_column_values_to_be_of_type", "kwargs": {"column": "a", "type_": "__class__"}}),
     ["type_"]),
    # shorthand keys under meta.cairn: only Cairn's keys, and no expectations smuggled in there
    (_native({"type": "expect_column_to_exist", "kwargs": {"column": "a"}},
             meta={"cairn": {"expectations": [{"type": "x", "kwargs": ROW}]}}), ["meta.cairn", "unknown key"]),
    (_native({"type": "expect_column_to_exist", "kwargs": {"column": "a"}}, meta=[1]), ["meta.cairn"]),
    # an expectation's meta is plain data of bounded depth
    (_shorthand({"type": "expect_column_to_exist", "kwargs": {"column": "a"}, "meta": {"a": [[[[[[[[[[1]]]]]]]]]]}}),
     ["meta holds only plain JSON"]),
    # ReDoS: a nested variable-length repetition, in a native regex, a regex list and the shorthand
    (_shorthand({"type": "expect_column_values_to_match_regex", "kwargs": {"column": "a", "regex": "^(a+)+$"}}),
     ["ReDoS"]),
    (_shorthand({"type": "expect_column_values_to_match_regex_list",
                 "kwargs": {"column": "a", "regex_list": ["^x$", "(\\w+\\s?)*$"]}}), ["ReDoS", "item 1"]),
    ({"name": "s", "columns": {"a": {"type": "str", "regex": "^(a|b+)*c$"}}}, ["ReDoS"]),
    ({"name": "s", "columns": {"a": {"type": "str", "regex": "a" * 1001}}}, ["over the 1000 limit"]),
])
def test_attacker_variants_are_refused(tmp_path: Path, data: dict[str, Any], words: list[str]) -> None:
    _refused(tmp_path, data, *words)


def test_a_unicode_escaped_key_is_the_same_key(tmp_path: Path) -> None:
    text = ('{"name": "s", "expectations": [{"type": "expect_column_to_exist", '
            '"kwargs": {"column": "a", "row\\u005fcondition": "@pd.io", "condition_parser": "pandas"}}]}')
    _refused(tmp_path, text, "'row_condition'")


def test_deep_nesting_and_large_documents_are_usage_errors(tmp_path: Path) -> None:
    deep = '{"name": "s", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": ' + \
        "[" * 100_000 + "]" * 100_000 + "}}]}"
    _refused(tmp_path, deep)
    _refused(tmp_path, '{"name": "s", "description": "' + "x" * (2 << 20) + '"}', "byte limit")


def test_regex_rules_accept_ordinary_patterns_and_bound_the_bad_ones() -> None:
    for fine in ("^P[0-9]{6}$", r"^\d{1,3}(,\d{3})*(\.\d+)?$", "^[a-z]+@[a-z]+\\.org$", "(ab|cd)+", "^(a{2})+$"):
        assert regex_problem(fine) is None, fine
    for bad in ("(a+)+$", "(a*)*b", "((ab)*c?)+", "(?:x+y?)*z", "(a?){30}"):
        assert regex_problem(bad) and "ReDoS" in str(regex_problem(bad)), bad
    assert "does not compile" in str(regex_problem("("))
    started = time.monotonic()
    for deep in ("(" * 500 + ")" * 500, "(?:" * 300 + "a" + ")*" * 300):
        assert isinstance(regex_problem(deep), str | None)
    assert time.monotonic() - started < 5


def test_the_allowlist_holds_no_code_bearing_argument() -> None:
    assert not {"row_condition", "condition_parser", "unexpected_rows_query", "base_query", "comparison_query",
                "result_format", "catch_exceptions", "windows", "json_schema", "description", "notes", "meta",
                } & set(PLAIN_ARGUMENTS)


@pytest.mark.parametrize("data", [b"", b"[]", b"\xff", b'{"name": 1}', b'{"name": "s", "columns": []}',
                                  b'{"name": "s", "columns": {"a": {"values": 5}}}',
                                  b'{"name": "s", "label": 5}', b'{"name": "s", "row_count": [1]}',
                                  b'{"name": "s", "row_count": {"min": "x"}}', b'{"name": "s", "images": 3}',
                                  b'{"name": "s", "expectations": [5]}', b'{"name": "s", "expectations": {}}',
                                  b'{"name": "n", "meta": 1, "expectations": []}',
                                  b'{"name": "s", "expectations": [{"type": "expect_column_to_exist", "kwargs": []}]}',
                                  b'{"name": "s", "columns": {"a": {"regex": 5}}}', b'{"a": NaN, "a": 1}'])
def test_the_fuzz_entry_point_raises_only_cairn_errors(data: bytes) -> None:
    with pytest.raises(CairnError):
        parse_suite(data)


def test_the_fuzz_entry_point_parses_a_good_suite() -> None:
    spec = parse_suite(json.dumps(_shorthand({"type": "expect_column_to_exist", "kwargs": {"column": "a"}})).encode())
    assert spec.name == "s" and spec.native[0]["kwargs"] == {"column": "a"}


# -- through the command line: catalog check and ingest run ----------------------------------------------------


def _attacked_demo(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The demo staged, its breast-cancer suite carrying the attack; returns (home, catalog, marker)."""
    from pipelines.staging import stage_demo

    repo = Path(__file__).resolve().parents[3]
    home = stage_demo(tmp_path / "home")
    suites = tmp_path / "suites"
    shutil.copytree(repo / "integrity" / "data" / "expectations", suites)
    marker = tmp_path / "marker"
    suite = json.loads((suites / "breast_cancer.json").read_text())
    suite["expectations"] = [{"type": "expect_column_values_to_not_be_null", "kwargs": {
        "column": "mean radius", "row_condition": _attack(marker), "condition_parser": "pandas"}}]
    (suites / "breast_cancer.json").write_text(json.dumps(suite))
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text((repo / "integrity" / "data" / "catalogs" / "demo.yaml").read_text().replace(
        "policy: policy.yaml", f"policy: policy.yaml\nsuites: {suites}", 1))
    return home, catalog, marker


def test_cairn_catalog_check_refuses_the_attack_and_ingest_never_runs_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from integrity.cli import main

    home, catalog, marker = _attacked_demo(tmp_path)
    capsys.readouterr()
    assert main(["catalog", "check", str(catalog), "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "breast_cancer.json" in err and "'row_condition'" in err and "evaluated as code" in err
    assert main(["ingest", "run", "--source", "breast-cancer", "--catalog", str(catalog), "--home", str(home)]) != 0
    printed = capsys.readouterr()
    assert "'row_condition'" in printed.out + printed.err
    assert not marker.exists()


def test_ingest_run_treats_the_refused_suite_as_a_usage_error_not_a_rejection(tmp_path: Path) -> None:
    from integrity.cli import main
    from integrity.storage import open_store

    home, catalog, marker = _attacked_demo(tmp_path)
    code = main(["ingest", "run", "--source", "breast-cancer", "--catalog", str(catalog), "--home", str(home)])
    assert not marker.exists()
    assert code == 2 and open_store(home / "store").list_quarantine() == []
