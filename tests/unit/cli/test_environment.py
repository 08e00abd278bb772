"""Every option has an environment variable; one name per concept; old names still work."""

import argparse
import logging

import pytest

from integrity.cli import environment
from integrity.cli.main import build_parser, main
from integrity.errors import UsageError
from integrity.settings import VARIABLES


def parse(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    return build_parser(environ or {}, argv).parse_args(argv)


def test_every_option_of_every_command_names_its_variable_in_help() -> None:
    parser = build_parser()
    found = environment.bindings(parser)
    commands = {b.command for b in found}
    assert {"verify", "pull", "ledger verify", "screen", "audit", "revoke", "policy add", "key generate"} <= commands
    for binding in found:
        assert f"[env: {binding.env}]" in (binding.action.help or ""), binding
        assert binding.env.startswith(("CAIRN_", "SIGSTORE_")), binding
    per_command: dict[str, list[str]] = {}
    for binding in found:
        per_command.setdefault(binding.command, []).append(binding.env)
    for command, names in per_command.items():
        assert len(names) == len(set(names)), (command, names)


def test_a_variable_sets_the_invoked_commands_option_and_the_flag_wins() -> None:
    env = {"CAIRN_PULL_WORKERS": "7", "CAIRN_PULL_DEST": "/tmp/out", "CAIRN_PULL_NO_PROGRESS": "yes",
           "CAIRN_INGEST_SOURCE": "a, b"}
    args = parse(["pull", "model@1"], env)  # --dest is required: the variable satisfies it
    assert (args.workers, args.dest, args.no_progress) == (7, "/tmp/out", True)
    assert parse(["pull", "model@1", "--workers", "2"], env).workers == 2
    assert parse(["ingest", "run"], env).source == ["a", "b"]
    assert parse(["ledger", "verify"], {"CAIRN_LEDGER_VERIFY_RECORDS": "1"}).records is True
    assert parse(["ledger", "verify"], {"CAIRN_LEDGER_VERIFY_RECORDS": "off"}).records is False


def test_settings_keep_their_own_variable_on_every_command() -> None:
    flags = {v.flag: v.env for v in VARIABLES if v.flag}
    for binding in environment.bindings(build_parser()):
        if binding.option in flags:
            assert binding.setting and binding.env == flags[binding.option], binding
    # resolved by integrity.settings (with the project file), not turned into a parser default here
    assert parse(["store", "verify"], {"CAIRN_STORE": "/elsewhere"}).store is None


@pytest.mark.parametrize(("env", "value", "says"), [
    ("CAIRN_PULL_WORKERS", "many", "not a valid --workers"),
    ("CAIRN_PULL_NO_PROGRESS", "maybe", "is a switch"),
    ("CAIRN_PUBLISH_RETENTION_MODE", "FOREVER", "takes one of GOVERNANCE, COMPLIANCE"),
])
def test_a_value_the_option_would_refuse_is_a_usage_error_naming_the_variable(env: str, value: str, says: str) -> None:
    command = env.split("_")[1].lower()
    with pytest.raises(UsageError) as caught:
        parse([command, "x", "--dest", "d"] if command == "pull" else [command, "x"], {env: value})
    assert env in caught.value.reason and says in caught.value.reason
    assert env in caught.value.advice


def test_a_bad_variable_of_another_command_does_not_stop_this_one(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_PULL_WORKERS", "many")
    assert parse(["verify", "f", "--key", "k"], {"CAIRN_PULL_WORKERS": "many"}).key == "k"
    assert main(["pull", "m@1", "--dest", "d"]) == 2
    assert "CAIRN_PULL_WORKERS" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "dest", "old", "new"), [
    (["audit", "rel", "--policy", "p.yaml"], "release_policy", "--policy", "--release-policy"),
    (["verify", "f", "--bundle", "f.sig", "--key", "k"], "signature", "--bundle", "--signature"),
    (["revoke", "--source", "s", "--reason", "r", "--signing-key", "k.pem"], "key", "--signing-key", "--key"),
    (["ledger", "verify", "--public-key", "l.pub"], "ledger_key", "--public-key", "--ledger-key"),
])
def test_old_option_names_still_work_and_say_the_new_one(argv: list[str], dest: str, old: str, new: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        args = parse(argv)
    assert getattr(args, dest) == argv[argv.index(old) + 1]
    assert f"{old} is now called {new}" in caplog.text
    help_text = build_parser()._subparsers._group_actions[0].choices[argv[0]].format_help()  # type: ignore[union-attr]
    assert new in help_text or argv[0] == "ledger"
    assert old not in help_text.replace(new, "")


def test_one_name_per_concept_across_commands() -> None:
    visible = {b.option for b in environment.bindings(build_parser())}
    assert not visible & {"--signing-key", "--public-key", "--bundle"}
    by_command = {b.command: set() for b in environment.bindings(build_parser())}
    for binding in environment.bindings(build_parser()):
        by_command[binding.command].add(binding.option)
    assert "--release-policy" in by_command["audit"] and "--release-policy" in by_command["publish"]
    assert {"--key", "--identity", "--issuer"} <= by_command["verify"] & by_command["policy add"]
    assert "--ledger-key" in by_command["pull"] and "--ledger-key" in by_command["ledger verify"]


def test_a_commands_own_refusal_names_the_variable_that_set_the_value(capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_SERVE_PORT", "70000")
    assert main(["serve"]) == 2
    assert "--port (set by $CAIRN_SERVE_PORT) 70000: not a TCP port" in capsys.readouterr().err
    assert main(["serve", "--port", "70001"]) == 2  # typed on the command line: the flag is named alone
    err = capsys.readouterr().err
    assert "--port 70001" in err and "$CAIRN_SERVE_PORT" not in err


def test_json_is_printed_for_command_lines_and_variables_that_do_not_parse(capsys: pytest.CaptureFixture[str],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    with pytest.raises(SystemExit) as exited:
        main(["screen", "--no-such-option", "--json"])
    assert exited.value.code == 2
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "usage" and "--no-such-option" in report["reason"]
    monkeypatch.setenv("CAIRN_PULL_WORKERS", "many")
    assert main(["pull", "m", "--dest", "d", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["result"] == "error" and "$CAIRN_PULL_WORKERS" in report["reason"]
