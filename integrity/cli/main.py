"""The ``cairn`` command line.

Exit codes: 0 verified/ok, 1 rejected (the artifact is not trusted), 2 usage or
input error. Every failure prints the artifact, the reason and what to do. Every option can also be
set from the environment (:mod:`integrity.cli.environment`; ``--help`` names each variable).
"""

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence

from integrity.cli.common import add_json_option
from integrity.errors import EXIT_REJECTED, EXIT_USAGE, CairnError


def build_parser(environ: Mapping[str, str] | None = None, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, each option's help naming its variable; with ``environ``, the defaults of the command
    ``argv`` invokes taken from it."""
    from integrity import __version__
    from integrity.cli import environment

    parser = argparse.ArgumentParser(prog="cairn", description="ML supply-chain integrity.")
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
        environment.apply(parser, environ, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from integrity.settings import process_environment

        parser = build_parser(process_environment(), argv)
    except CairnError as error:  # a variable the option would refuse
        print(error.diagnostics(), file=sys.stderr)
        return error.exit_code
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except CairnError as error:
        if getattr(args, "json", False):
            print(json.dumps({"result": "rejected" if error.exit_code == EXIT_REJECTED else "error",
                              "error": type(error).__name__, "kind": error.kind,
                              "artifact": error.artifact, "reason": error.reason}, indent=2))
        print(error.diagnostics(), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_USAGE
    except OSError as error:  # a file or connection problem the command did not name: an input error, said plainly
        where = getattr(error, "filename", None)
        reason = error.strerror or str(error)
        if getattr(args, "json", False):
            print(json.dumps({"result": "error", "error": type(error).__name__, "kind": "unreadable",
                              "artifact": where, "reason": reason}, indent=2))
        print(f"ArtifactReadError: {where + ': ' if where else ''}{reason}\n"
              "What to do: Check that the path exists, is a regular file or folder, and is readable.", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # fail closed: an unexpected error never reads as success
        print(f"cairn: unexpected error ({type(error).__name__}): {error}", file=sys.stderr)
        return EXIT_REJECTED if args.command == "verify" else EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
