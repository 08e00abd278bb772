"""``--json`` on every exit (issue 25, item 6): an error, internal ones included, is a JSON object on stdout.

A 16-image set once died in ``topk`` ("selected index k out of range") and a huge table cell in the
residual test's SVD, each printing a bare traceback line and no JSON.
"""

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from integrity.schemas import problems

cli_main = importlib.import_module("integrity.cli.main")  # the package's ``main`` is the function

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = cli_main.main([*args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _screen(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code, report, err = _run(capsys, "screen", *args)
    assert problems("screen-report", report) == [], report  # docs/schemas/screen-report.schema.json, error form too
    return code, report, err


def test_a_16_image_set_gets_a_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "small.npz", x=(rng.random((16, 8, 8)) * 255).astype(np.uint8), y=np.arange(16) % 2)
    code, report, _ = _screen(capsys, str(tmp_path / "small.npz"))
    assert code in (0, 1) and report["verdict"] in ("passed", "quarantined") and report["samples"] == 16


def test_too_small_a_table_is_an_error_in_the_report_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n")
    code, report, err = _screen(capsys, str(tmp_path / "t.csv"), "--label-column", "label")
    assert code == 2 and report["verdict"] == "error" and report["passed"] is False
    assert report["artifact"] == str(tmp_path / "t.csv") and "3 samples" in report["error"]["message"]
    assert report["error"]["kind"] == "unreadable" and str(tmp_path) in err


def test_a_stray_cell_is_an_error_naming_column_and_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["a,b,label"] + [f"{i},{i % 7},{i % 2}" for i in range(40)]
    rows[6] = "inf,3,1"
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    code, report, _ = _screen(capsys, str(tmp_path / "t.csv"), "--label-column", "label")
    assert code == 2 and report["error"]["type"] == "ArtifactReadError"
    assert "column 'a'" in report["error"]["message"] and "row 5: 'inf'" in report["error"]["message"]


def test_an_extreme_cell_is_reported_with_its_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.loc[17, "mean area"] = 1e19
    frame.to_csv(tmp_path / "t.csv", index=False)
    code, report, _ = _screen(capsys, str(tmp_path / "t.csv"), "--label-column", "target")
    flagged = {f["index"]: f for f in report["flagged"]}
    assert "extreme value in column mean area: 1e+19 (robust bounds [" in flagged[17]["reason"]
    assert code == 0 and "extreme values" in report["reason"]  # one flagged row of 569: the rest passes


def test_an_internal_error_is_json_exit_2_and_names_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import integrity.scans.poisoning as poisoning

    def broken(*_: Any, **__: Any) -> None:
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(poisoning, "scan_dataset", broken)
    rows = ["a,b,label"] + [f"{i},{i % 7},{i % 2}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    code, report, err = _screen(capsys, str(tmp_path / "t.csv"), "--label-column", "label")
    assert code == 2 and report["verdict"] == "error"
    assert report["error"] | {"advice": ""} == {
        "kind": "internal", "type": "LinAlgError", "message": "internal error (LinAlgError): SVD did not converge",
        "artifact": str(tmp_path / "t.csv"), "advice": ""}
    assert "LinAlgError" in err and str(tmp_path / "t.csv") in err


def test_a_missing_dataset_is_json_in_the_report_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _ = _screen(capsys, str(tmp_path / "absent.csv"), "--label-column", "label")
    assert code == 2 and report["verdict"] == "error" and report["error"]["artifact"]


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every runnable command (argv words, parser) of the CLI."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _leaves(sub, (*path, name))
    return found or [(path, parser)]


def _argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    argv = list(path)
    for action in parser._actions:
        value = str((action.choices and next(iter(action.choices))) or ("1" if action.type in (int, float) else "x"))
        if not action.option_strings and action.nargs != "?" and action.nargs != argparse.REMAINDER:
            argv.append(value)
        elif action.required:
            argv += [action.option_strings[0], value]
    return argv


def test_every_json_command_prints_json_on_an_internal_error(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli_main.build_parser()
    commands = [(path, p) for path, p in _leaves(parser) if any("--json" in a.option_strings for a in p._actions)]
    assert len(commands) >= 10

    def boom(args: argparse.Namespace) -> int:
        raise RuntimeError("index 3 is out of bounds")

    for _, sub in commands:
        sub.set_defaults(handler=boom)
    monkeypatch.setattr(cli_main, "build_parser", lambda *_, **__: parser)
    for path, sub in commands:
        argv = _argv(path, sub)
        code, report, err = _run(capsys, *argv)
        assert code == (1 if path == ("verify",) else 2), path
        assert "RuntimeError" in err and "index 3 is out of bounds" in json.dumps(report), path
        if path == ("screen",):
            assert report["verdict"] == "error" and report["error"]["kind"] == "internal"
            continue
        assert report["result"] == "error" and report["kind"] == "internal", path
        named = len(argv) > len(path) and not argv[len(path)].startswith("-")  # a positional input
        assert report["artifact"] == (argv[len(path)] if named else None) or not named, (path, report)
        if named:
            assert report["artifact"] in err, path
