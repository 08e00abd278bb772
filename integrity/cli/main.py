"""The ``cairn`` command line.

Exit codes: 0 verified/ok, 1 rejected (the artifact is not trusted), 2 usage or
input error. Every failure prints the artifact, the reason and what to do. Every option can also be
set from the environment (:mod:`integrity.cli.environment`; ``--help`` names each variable).
"""

import argparse
import json
import sys
import typing
from collections.abc import Callable, Mapping, Sequence

from integrity.cli.common import add_json_option, error_facts, print_json_error
from integrity.errors import EXIT_REJECTED, EXIT_USAGE, CairnError


def build_parser(environ: Mapping[str, str] | None = None, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, each option's help naming its variable; with ``environ``, the defaults of the command
    ``argv`` invokes taken from it."""
    from integrity import __version__
    from integrity.cli import environment

    parser = _Parser(prog="cairn", description="ML supply-chain integrity.")
    parser.add_argument("--version", action="version", version=f"cairn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        add_json_option(p)
        return p

    from integrity.cli import pipeline, trust

    trust.register(add)

    # Commands from other installed packages (the Dagster code location adds `cairn demo`).
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group="cairn.commands"), key=lambda e: e.name):
        entry.load()(add)

    pipeline.register_intake(add)
    from integrity.cli import project, screening

    project.register(add)
    screening.register(add)

    from integrity.cli.distribution import add_distribution_commands

    add_distribution_commands(add)
    pipeline.register_release(add)

    environment.annotate(parser)
    if environ is not None:
        parser.set_defaults(environment_options=environment.apply(parser, environ, argv))
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse's parser, keeping its last usage message so that ``--json`` can report it as JSON."""

    last_error: str | None = None

    def error(self, message: str) -> "typing.NoReturn":
        _Parser.last_error = f"{self.prog}: {message}"
        super().error(message)


def _json_requested(argv: Sequence[str]) -> bool:
    """Whether a command line that did not parse asked for JSON (only the flag can say so before parsing)."""
    return "--json" in argv


def _usage_json(reason: str) -> None:
    print(json.dumps({"result": "error", "error": "UsageError", "kind": "usage", "artifact": None,
                      "reason": reason}, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from integrity.settings import process_environment

        parser = build_parser(process_environment(), argv)
    except CairnError as error:  # a variable the option would refuse
        if _json_requested(argv):
            _usage_json(error.summary())
        print(error.diagnostics(), file=sys.stderr)
        return error.exit_code
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's usage error (2), or --help and --version (0)
        if exit_.code not in (0, None) and _json_requested(argv):
            _usage_json(_Parser.last_error or "invalid command line")
        raise
    try:
        code: int = args.handler(args)
        return code
    except CairnError as error:
        from integrity.cli.environment import name_variables

        name_variables(error, getattr(args, "environment_options", {}))
        print_json_error(args, error)
        print(error.diagnostics(), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_USAGE
    except OSError as error:  # a file or connection problem the command did not name: an input error, said plainly
        print_json_error(args, error)
        _, where, reason, advice = error_facts(args, error)
        print(f"ArtifactReadError: {where + ': ' if where else ''}{reason}\nWhat to do: {advice}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # fail closed: an unexpected error never reads as success
        print_json_error(args, error)
        _, where, _, advice = error_facts(args, error)
        print(f"cairn: unexpected error ({type(error).__name__}){' on ' + where if where else ''}: {error}\n"
              f"What to do: {advice}", file=sys.stderr)
        return EXIT_REJECTED if args.command == "verify" else EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
