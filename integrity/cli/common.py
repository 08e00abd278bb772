"""What every command group shares: output, the hashing options, the Cairn-home options."""

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)


#: The arguments that name what a command reads, in the order an error report names them.
INPUT_ARGUMENTS = ("data", "path", "dir", "bundle", "release", "index", "catalog", "policy", "public_key", "source",
                   "step")
#: What to do about an error Cairn did not foresee (an internal error: exit 2, nothing trusted).
INTERNAL_ADVICE = ("This is a fault in Cairn, not a verdict on the input, and nothing was trusted; report it with "
                   "the command line and the input named here.")

#: A command's own ``--json`` error form: ``(args, error) -> document`` (:func:`error_facts` has what to say).
JsonErrorForm = Callable[[argparse.Namespace, BaseException], dict[str, Any]]


def command_input(args: argparse.Namespace) -> str | None:
    """The input a command was run on (its dataset, path, bundle...), as an error report names it."""
    for name in INPUT_ARGUMENTS:
        value = getattr(args, name, None)
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value) or None
        if value:
            return str(value)
    return None


def error_facts(args: argparse.Namespace, error: BaseException) -> tuple[str, str | None, str, str]:
    """``(kind, artifact, reason, advice)`` of any error a command ends with (Cairn's, the OS's or internal)."""
    from integrity.errors import CairnError

    if isinstance(error, CairnError):
        return error.kind, error.artifact or command_input(args), error.reason, error.advice
    if isinstance(error, OSError):
        where = getattr(error, "filename", None)
        return ("unreadable", str(where) if where else command_input(args), error.strerror or str(error),
                "Check that the path exists, is a regular file or folder, and is readable.")
    return "internal", command_input(args), f"internal error ({type(error).__name__}): {error}", INTERNAL_ADVICE


def json_error(args: argparse.Namespace, error: BaseException) -> dict[str, Any]:
    """The JSON document a ``--json`` command prints on stdout when it ends with ``error``.

    A command with its own error form (``set_defaults(json_error=...)``: ``cairn screen``'s follows the
    screen report's schema) gets it; every other command ``{"result", "error", "kind", "artifact", "reason"}``.
    """
    from integrity.errors import EXIT_REJECTED, CairnError

    form: JsonErrorForm | None = getattr(args, "json_error", None)
    if form is not None:
        return form(args, error)
    kind, artifact, reason, _ = error_facts(args, error)
    rejected = isinstance(error, CairnError) and error.exit_code == EXIT_REJECTED
    # The artifact the error itself names (Cairn's errors, the OS's); an internal error names the command's input.
    named = error.artifact if isinstance(error, CairnError) else artifact
    return {"result": "rejected" if rejected else "error", "error": type(error).__name__, "kind": kind,
            "artifact": named, "reason": reason}


def print_json_error(args: argparse.Namespace, error: BaseException) -> None:
    """With ``--json``, :func:`json_error` on stdout; never raises (the error being reported matters more)."""
    if not getattr(args, "json", False):
        return
    try:
        print(json.dumps(json_error(args, error), indent=2, default=str))
    except Exception:  # a form that fails: still one JSON object
        print(json.dumps({"result": "error", "error": type(error).__name__, "kind": "internal",
                          "artifact": command_input(args), "reason": str(error)}, indent=2, default=str))


def hashing_config(args: argparse.Namespace) -> Any:
    from integrity.trust.hashing import HashingConfig

    config = HashingConfig()
    if getattr(args, "shard_size", None):
        config = config.use_shards(args.shard_size)
    if getattr(args, "workers", None):
        config = config.with_workers(args.workers)
    return config


def write_record(path: str, text: str) -> None:
    from integrity.trust.signing import atomic_write

    atomic_write(path, text.encode())


#: How a command group registers a command: ``add(name, handler, help)`` returns its parser.
AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


# -- shared option groups (as sigstore-python shares its verify options) ------------------------------------

HOME_HELP = "Cairn home (default $CAIRN_HOME, the project file, else ./.cairn)"
STORE_HELP = "artifact store: a path or s3://bucket/prefix (default $CAIRN_STORE, the project file, else HOME/store)"
CATALOG_HELP = "catalog YAML (default $CAIRN_CATALOG, the project file, else the packaged demo catalog)"


def add_location_options(parser: argparse.ArgumentParser, *, home: bool = True, store: bool = True,
                         catalog: bool = False, store_help: str = STORE_HELP) -> None:
    """``--home``, ``--store`` and ``--catalog``, worded the same on every command (settings.py resolves them)."""
    if catalog:
        parser.add_argument("--catalog", help=CATALOG_HELP)
    if home:
        parser.add_argument("--home", help=HOME_HELP)
    if store:
        parser.add_argument("--store", help=store_help)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


#: The signer options, worded the same on ``cairn verify`` and ``cairn policy add``.
KEY_HELP = "the signer's pinned public key (PEM)"
IDENTITY_HELP = "the signer's identity: Sigstore SAN (e-mail or workflow URI), or the certificate subject with --ca"
ISSUER_HELP = "the signer's OIDC issuer URL (Sigstore)"


def add_signer_options(parser: argparse.ArgumentParser, *, certificates: bool = False) -> None:
    """``--key``, ``--identity``, ``--issuer`` (and ``--ca``/``--tsa``): who may sign, on every command that says it."""
    parser.add_argument("--key", help=KEY_HELP)
    parser.add_argument("--identity", help=IDENTITY_HELP)
    parser.add_argument("--issuer", help=ISSUER_HELP)
    if certificates:
        parser.add_argument("--ca", help="pinned PEM CA certificate(s) (certificate method)")
        parser.add_argument("--tsa", help="pinned PEM timestamp-authority certificate(s) (certificate method)")


class _RenamedOption(argparse.Action):
    """An option's old name: still accepted, stored under the new name's dest, with a warning."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        log.warning("%s is now called %s; the old name will go in a later release", option_string, self.new)
        setattr(namespace, self.dest, values)


def add_renamed_option(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep ``old`` working for ``new`` (one name per concept; old scripts do not break). Hidden from help."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, action=_RenamedOption, new=new, help=argparse.SUPPRESS)
