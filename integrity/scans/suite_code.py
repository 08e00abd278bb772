"""What a native Great Expectations expectation in a suite may say: plain data, never code.

A GX expectation can carry code that its backend evaluates: a ``row_condition`` is handed to
pandas ``DataFrame.query`` (``condition_parser: "pandas"``, or a ``pass_through`` condition object),
where ``@`` reaches module scope and so any Python (``@pd.core.frame.com.builtins.__import__('os')``);
a structured condition object is rendered into the same query string; the ``great_expectations``
parser turns a condition into SQL or Spark filters; ``unexpected_rows_query``, ``base_query`` and
``comparison_query`` are SQL text; ``{"$PARAMETER": ...}`` values and ``suite_parameters`` go
through GX's expression evaluator (``now()``, arithmetic). A suite is configuration that arrives
with a dataset, so Cairn treats it as untrusted input and accepts plain data only:

* an **allowlist** of argument names (:data:`PLAIN_ARGUMENTS`), each with the shape of value it
  takes: a name Cairn does not know (a future GX's code-bearing argument) is refused, never passed on;
* an **allowlist** of GX core expectation types (:data:`EXPECTATION_TYPES`) that run on a pandas
  frame and evaluate no code (no ``*sql*``, ``unexpected_rows_expectation``, query comparisons,
  SQL-only LIKE patterns, JSON Schema documents, custom or plugin expectation classes);
* regular expressions that compile, are of bounded length, and do not nest a variable-length
  repetition inside another (``(a+)+``: exponential backtracking on a long cell, a ReDoS).

Every refusal is a :class:`~integrity.errors.UsageError` (exit 2) naming the suite file, the
expectation and the argument: a suite mistake, never a vendor's rejection. The one function that
applies these rules, :func:`check_native_expectation`, runs wherever a suite is parsed (so in
``cairn catalog check`` and at load time during ingestion alike).
"""

import math
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from integrity.errors import UsageError

#: Longest regular expression a suite may hold.
MAX_REGEX_CHARS = 1000
#: Longest string (a column name, a set member, a format) and largest list a suite argument may hold.
MAX_TEXT_CHARS = 10_000
MAX_ITEMS = 100_000
#: Deepest nesting of ``meta`` (never evaluated, but bounded like every other input).
MAX_META_DEPTH = 8

#: GX core expectations that run on a pandas frame and take only plain data.
EXPECTATION_TYPES = frozenset({
    "expect_column_distinct_values_to_be_in_set", "expect_column_distinct_values_to_contain_set",
    "expect_column_distinct_values_to_equal_set", "expect_column_kl_divergence_to_be_less_than",
    "expect_column_max_to_be_between", "expect_column_mean_to_be_between", "expect_column_median_to_be_between",
    "expect_column_min_to_be_between", "expect_column_most_common_value_to_be_in_set",
    "expect_column_pair_values_a_to_be_greater_than_b", "expect_column_pair_values_to_be_equal",
    "expect_column_pair_values_to_be_in_set", "expect_column_proportion_of_non_null_values_to_be_between",
    "expect_column_proportion_of_unique_values_to_be_between", "expect_column_quantile_values_to_be_between",
    "expect_column_stdev_to_be_between", "expect_column_sum_to_be_between", "expect_column_to_exist",
    "expect_column_unique_value_count_to_be_between", "expect_column_value_lengths_to_be_between",
    "expect_column_value_lengths_to_equal", "expect_column_value_z_scores_to_be_less_than",
    "expect_column_values_to_be_between", "expect_column_values_to_be_dateutil_parseable",
    "expect_column_values_to_be_decreasing", "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_in_type_list", "expect_column_values_to_be_increasing",
    "expect_column_values_to_be_json_parseable", "expect_column_values_to_be_null",
    "expect_column_values_to_be_of_type", "expect_column_values_to_be_unique",
    "expect_column_values_to_match_regex", "expect_column_values_to_match_regex_list",
    "expect_column_values_to_match_strftime_format", "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_not_be_null", "expect_column_values_to_not_match_regex",
    "expect_column_values_to_not_match_regex_list", "expect_compound_columns_to_be_unique",
    "expect_multicolumn_sum_to_equal", "expect_multicolumn_values_to_be_equal",
    "expect_multicolumn_values_to_be_unique", "expect_select_column_values_to_be_unique_within_record",
    "expect_table_column_count_to_be_between", "expect_table_column_count_to_equal",
    "expect_table_columns_to_match_ordered_list", "expect_table_columns_to_match_set",
    "expect_table_row_count_to_be_between", "expect_table_row_count_to_equal",
})

#: Arguments a backend evaluates as code, named in the refusal (any other unknown name is refused too).
_CODE_ARGUMENTS = {
    "row_condition": "row conditions are evaluated as code by the backend (pandas DataFrame.query, where '@' "
                     "reaches Python; SQL or Spark filters otherwise)",
    "condition_parser": "a condition parser only says how a row condition is evaluated as code by the backend",
    "unexpected_rows_query": "SQL text is run by the backend",
    "base_query": "SQL text is run by the backend",
    "comparison_query": "SQL text is run by the backend",
    "comparison_data_source_name": "it names another data source for SQL text to run on",
    "other_table_name": "it names another table for SQL to read",
    "windows": "windows look up earlier results by suite parameter",
    "json_schema": "a JSON Schema document is a program of its own ($ref, patterns)",
}
_CODE_TYPES = "SQL, query comparisons, JSON Schema documents or a custom expectation class"

Check = Callable[[Any], str | None]  # the value -> None when it is fine, else what is wrong with it


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int) or (isinstance(value, str) and len(value) <= MAX_TEXT_CHARS)


def number_problem(value: Any) -> str | None:
    ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool) and _scalar(value))
    return None if ok else "expected a number or null"


def _bound(value: Any) -> str | None:  # min_value/max_value: a number, or a date or datetime as text
    return None if _scalar(value) and not isinstance(value, bool) else "expected a number, a date text or null"


def _flag(value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else "expected true or false"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and len(value) <= MAX_TEXT_CHARS else "expected a string"


def _name(value: Any) -> str | None:  # a type name GX looks up (np.dtype, then an attribute of pandas)
    ok = isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_\[\], ]{0,63}", value) is not None
    return None if ok else "expected a type name (letters, digits, '_', '[', ']')"


def _list_of(item: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            return f"expected a list (at most {MAX_ITEMS} items)"
        return next((f"item {i}: {p}" for i, v in enumerate(value) if (p := item(v)) is not None), None)

    return check


def _element(value: Any) -> str | None:
    return None if _scalar(value) else "expected a string, a number, true/false or null"


def _pair(value: Any) -> str | None:
    return None if isinstance(value, list) and len(value) == 2 and all(map(_scalar, value)) else "expected a pair"


def _object_of(**fields: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"expected an object of {sorted(fields)}"
        extra = sorted(set(value) - set(fields))
        if extra:
            return f"unknown key(s) {extra}; allowed: {sorted(fields)}"
        return next((f"{k}: {p}" for k, v in value.items() if (p := fields[k](v)) is not None), None)

    return check


def _one_of(*choices: str) -> Check:
    return lambda value: None if value is None or value in choices else f"expected one of {list(choices)}"


def _regex(value: Any) -> str | None:
    if not isinstance(value, str):
        return "expected a regular expression (a string)"
    return regex_problem(value)


_NUMBERS = _list_of(number_problem)

#: Argument name -> the shape of its value. Names GX takes that are plain data; nothing else passes.
PLAIN_ARGUMENTS: dict[str, Check] = {
    "column": _text, "column_A": _text, "column_B": _text,
    "column_list": _list_of(_text), "column_set": _list_of(_text), "column_index": number_problem,
    "min_value": _bound, "max_value": _bound, "value": _bound, "sum_total": number_problem,
    "strict_min": _flag, "strict_max": _flag, "strictly": _flag, "or_equal": _flag, "ties_okay": _flag,
    "exact_match": _flag, "double_sided": _flag, "bucketize_data": _flag,
    "mostly": number_problem, "threshold": number_problem, "multiplier": number_problem,
    "tail_weight_holdout": number_problem, "internal_weight_holdout": number_problem,
    "allow_relative_error": lambda v: None if isinstance(v, bool) else number_problem(v),
    "value_set": _list_of(_element), "value_pairs_set": _list_of(_pair),
    "regex": _regex, "regex_list": _list_of(_regex), "match_on": _one_of("any", "all"),
    "strftime_format": _text, "type_": _name, "type_list": _list_of(_name),
    "ignore_row_if": _one_of("both_values_are_missing", "either_value_is_missing", "neither",
                             "all_values_are_missing", "any_value_is_missing", "never"),
    "method": _one_of("iqr", "kde", "std"),
    "partition_object": _object_of(bins=_list_of(_element), values=_list_of(_element), weights=_NUMBERS,
                                   tail_weights=_NUMBERS),
    "quantile_ranges": _object_of(quantiles=_NUMBERS, value_ranges=_list_of(_list_of(_bound))),
}

#: The keys of one expectation as GX writes it; ``notes`` and ``description`` are never handed to GX.
_ITEM_CHECKS: dict[str, Check] = {
    "type": _text, "expectation_type": _text, "id": lambda v: None if v is None else _text(v),
    "kwargs": lambda v: None if isinstance(v, dict) else "expected an object",
    "meta": lambda v: None if isinstance(v, dict) else "expected an object",
    "notes": lambda v: None if v is None else _list_of(_text)(v) if isinstance(v, list) else _text(v),
    "description": lambda v: None if v is None else _text(v),
    "severity": _one_of("critical", "warning", "info"),
}


def _sre() -> tuple[Any, Any]:
    """The stdlib's regex parser and its constants (deprecated names, the parser ``re`` itself uses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import sre_constants
        import sre_parse

    return sre_parse, sre_constants


def regex_problem(pattern: str) -> str | None:
    """What makes ``pattern`` unfit to run on untrusted cells (None: it is fit).

    Refused: over :data:`MAX_REGEX_CHARS`, not compiling, or a variable-length repetition nested in
    another repetition (``(a+)+``, ``(\\w+\\s?)*``), which backtracks exponentially on a long cell
    that almost matches. A heuristic: overlapping alternatives under a repetition (``(a|a)*``) pass.
    """
    if len(pattern) > MAX_REGEX_CHARS:
        return f"a regular expression of {len(pattern)} characters is over the {MAX_REGEX_CHARS} limit"
    parser, constants = _sre()
    try:
        re.compile(pattern)
        parsed = parser.parse(pattern)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        return f"regular expression {pattern[:100]!r} does not compile: {exc}"
    if _nested_repeat(constants, parsed, inside=False):
        return (f"regular expression {pattern[:100]!r} nests a variable-length repetition in another one, which "
                "backtracks exponentially on a long value (ReDoS); make the inner part fixed-length")
    return None


def _nested_repeat(c: Any, items: Any, *, inside: bool) -> bool:
    """Whether a variable-length repetition sits inside a repetition of more than once."""
    for op, arg in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            low, high, sub = arg
            if inside and high != low:
                return True
            if _nested_repeat(c, sub, inside=inside or high > 1):
                return True
        elif op in (c.SUBPATTERN, c.ASSERT, c.ASSERT_NOT, getattr(c, "ATOMIC_GROUP", c.SUBPATTERN)):
            sub = arg[-1] if isinstance(arg, tuple) else arg
            if _nested_repeat(c, sub, inside=inside):
                return True
        elif op == c.BRANCH and any(_nested_repeat(c, branch, inside=inside) for branch in arg[1]):
            return True
    return False


def _folded(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold().strip()


def _plain_meta(value: Any, depth: int = 0) -> bool:
    if depth > MAX_META_DEPTH:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_meta(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return len(value) <= MAX_ITEMS and all(_plain_meta(v, depth + 1) for v in value)
    return _scalar(value)


def check_arguments(path: Path, where: str, kwargs: Mapping[str, Any]) -> None:
    """Every argument is a known plain-data one with a value of its shape, else a usage error naming it."""
    for name, value in kwargs.items():
        label = f"{where}: argument {str(name)[:80]!r}"
        reason = _CODE_ARGUMENTS.get(_folded(str(name)))
        if reason is not None:
            raise UsageError(f"{label}: {reason}; Cairn refuses arguments a backend evaluates as code",
                             artifact=path, advice="Filter the rows before ingestion, or express the rule with "
                             "a plain expectation (a column, bounds, a value set, a regex).")
        if isinstance(value, dict) and "$PARAMETER" in value:
            raise UsageError(f"{label}: a $PARAMETER reference is evaluated by GX's expression parser at run time; "
                             "Cairn refuses it: write the value itself", artifact=path)
        check = PLAIN_ARGUMENTS.get(str(name))
        if check is None:
            raise UsageError(f"{label} is not one Cairn accepts: only plain-data arguments pass "
                             f"({', '.join(sorted(PLAIN_ARGUMENTS))}); an argument Cairn does not know may be "
                             "evaluated as code by the backend", artifact=path)
        problem = check(value)
        if problem is not None:
            raise UsageError(f"{label}: {problem}", artifact=path)


def check_native_expectation(path: Path, index: int, item: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """One native expectation, checked as plain data: its (type, kwargs, meta), or a usage error.

    Checks the shape and the arguments only; :func:`check_expectation_type` runs after GX has built it.
    """
    if not isinstance(item, dict):
        raise UsageError(f"expectations[{index}]: expected an object", artifact=path)
    for key, value in item.items():
        label = f"expectations[{index}]: key {str(key)[:80]!r}"
        if _folded(str(key)) in _CODE_ARGUMENTS:
            raise UsageError(f"{label}: {_CODE_ARGUMENTS[_folded(str(key))]}; Cairn refuses it", artifact=path)
        check = _ITEM_CHECKS.get(str(key))
        if check is None:
            raise UsageError(f"{label} is unknown; allowed: {sorted(_ITEM_CHECKS)}", artifact=path)
        problem = check(value)
        if problem is not None:
            raise UsageError(f"{label}: {problem}", artifact=path)
    kind = item.get("type") or item.get("expectation_type")
    if not isinstance(kind, str) or not isinstance(item.get("kwargs", {}), dict):
        raise UsageError(f"expectations[{index}]: needs a 'type' and an object of 'kwargs'", artifact=path)
    kwargs = dict(item.get("kwargs") or {})
    check_arguments(path, f"expectations[{index}] ({kind[:80]})", kwargs)
    meta = dict(item.get("meta") or {})
    if not _plain_meta(meta):
        raise UsageError(f"expectations[{index}] ({kind[:80]}): meta holds only plain JSON data (strings, numbers, "
                         f"lists, objects; at most {MAX_META_DEPTH} deep)", artifact=path)
    return kind, kwargs, meta


def check_expectation_type(path: Path, index: int, kind: str) -> None:
    """After GX has built it: a GX core expectation Cairn runs (no SQL, no custom class), else a usage error."""
    if kind not in EXPECTATION_TYPES:
        raise UsageError(f"expectations[{index}] ({kind[:80]}): Cairn does not run this expectation type: it is "
                         f"not one of the GX core expectations that run on a pandas frame with plain data only "
                         f"({_CODE_TYPES} are refused)", artifact=path)


def check_suite_parameters(path: Path, value: Any) -> None:
    """A native suite's ``suite_parameters``: none (they feed GX's expression evaluator)."""
    if value:
        raise UsageError("suite_parameters: suite parameters are evaluated by GX's expression parser; Cairn "
                         "refuses them: write each value in the expectation itself", artifact=path)
