"""Every ``cairn`` option can be set from the environment.

Two kinds of variable, and ``--help`` names the one for each option (``[env: NAME]``):

* An option that is a setting (``--home``, ``--store``, ``--catalog``, ``--release-policy``,
  ``--spec``, ``--state``, ``--timeout``, ``--ledger-key``, ``--checkpoint``, ``--reports-url``,
  ``--identity-token``) reads that setting's variable (``CAIRN_HOME``, ...), resolved by
  :mod:`integrity.settings` with the project file, so the option means the same on every command.
* Every other option reads ``CAIRN_<COMMAND>_<OPTION>``: the command path and the option's long
  name, upper-cased, ``-`` as ``_`` (``cairn pull --workers`` reads ``CAIRN_PULL_WORKERS``;
  ``cairn ledger verify --records`` reads ``CAIRN_LEDGER_VERIFY_RECORDS``).

The flag wins over the variable. Switches take ``1/true/yes/on`` or ``0/false/no/off``; a
repeatable option takes a comma-separated list. A value the option would refuse on the command line
is a usage error (exit 2) that names the variable.
"""

import argparse
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from integrity.errors import CairnError, UsageError
from integrity.settings import VARIABLES

#: Options that are settings: their variable is the setting's, on every command.
SETTING_FLAGS: dict[str, str] = {v.flag: v.env for v in VARIABLES if v.flag}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Binding:
    """One option and the variable that sets it."""

    command: str
    option: str
    env: str
    #: Whether :mod:`integrity.settings` reads the variable (the CLI leaves the default alone).
    setting: bool
    action: argparse.Action


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                 ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, child in action.choices.items():
                if id(child) not in seen:  # aliases point at the same parser
                    seen.add(id(child))
                    yield from _subcommands(child, (*path, name))


def env_name(path: tuple[str, ...], option: str) -> str:
    words = [*path, option.lstrip("-")]
    return "CAIRN_" + "_".join(w.upper().replace("-", "_") for w in words)


def bindings(parser: argparse.ArgumentParser) -> list[Binding]:
    """Every option of every subcommand with its variable (hidden old names and --help/--version left out)."""
    found = []
    for path, sub in _subcommands(parser):
        if not path:
            continue
        for action in sub._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if not longs or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            flag = longs[0]
            setting = flag in SETTING_FLAGS
            found.append(Binding(" ".join(path), flag, SETTING_FLAGS[flag] if setting else env_name(path, flag),
                                 setting, action))
    return found


def _value(binding: Binding, raw: str) -> Any:
    action = binding.action
    advice = f"Fix or unset ${binding.env}; `cairn {binding.command} --help` names each option's variable."
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise UsageError(f"${binding.env}={raw!r}: {binding.option} is a switch; use 1/true/yes/on or "
                             "0/false/no/off", advice=advice)
        on = word in _TRUE
        return on if isinstance(action, argparse._StoreTrueAction) else not on
    items = [part.strip() for part in raw.split(",")] if isinstance(action, argparse._AppendAction) else [raw]
    values = []
    for item in items:
        try:
            value = action.type(item) if callable(action.type) else item
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise UsageError(f"${binding.env}={raw!r} is not a valid {binding.option}: {exc}",
                             advice=advice) from exc
        if action.choices is not None and value not in action.choices:
            raise UsageError(f"${binding.env}={raw!r}: {binding.option} takes one of "
                             f"{', '.join(map(str, action.choices))}", advice=advice)
        values.append(value)
    return values if isinstance(action, argparse._AppendAction) else values[0]


def annotate(parser: argparse.ArgumentParser) -> None:
    """Name each option's variable in its help text."""
    for binding in bindings(parser):
        note = f"[env: {binding.env}]"
        binding.action.help = f"{binding.action.help} {note}" if binding.action.help else note


def command_path(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[str, ...]:
    """The subcommand ``argv`` invokes (``("ledger", "verify")``), read from its command words."""
    path: list[str] = []
    current = parser
    for token in argv:
        choices = next((a.choices for a in current._actions if isinstance(a, argparse._SubParsersAction)), None)
        if choices is None:
            break
        if token in choices:
            path.append(token)
            current = choices[token]
        elif not token.startswith("-"):
            break
    return tuple(path)


def apply(parser: argparse.ArgumentParser, environ: Mapping[str, str], argv: Sequence[str]) -> dict[str, str]:
    """Set the invoked command's non-setting options' defaults from their variables, where set.

    Only the command being run reads its variables: a bad ``CAIRN_PULL_WORKERS`` does not stop
    ``cairn verify``. Returns ``{option: variable}`` for the options a variable set and ``argv`` did not.
    """
    command = " ".join(command_path(parser, argv))
    applied: dict[str, str] = {}
    for binding in bindings(parser):
        if binding.setting or binding.command != command or binding.env not in environ:
            continue
        binding.action.default = _value(binding, environ[binding.env])
        binding.action.required = False
        given = any(a == binding.option or a.startswith(f"{binding.option}=") for a in argv)
        if not given:
            applied[binding.option] = binding.env
    return applied


def name_variables(error: CairnError, applied: Mapping[str, str]) -> CairnError:
    """``error`` with each option it names that a variable set followed by that variable.

    A command's own refusal says ``--port 70000: not a TCP port``; where ``$CAIRN_SERVE_PORT`` gave the
    value, the user must be told to fix the variable, not a flag they never typed.
    """
    reason = error.reason
    for option, env in applied.items():
        reason = re.sub(rf"(?<![\w-]){re.escape(option)}(?![\w-])", f"{option} (set by ${env})", reason)
    if reason != error.reason:
        error.reason = reason
        error.args = (error.summary(),)
    return error
