"""``cairn init DIR``: a user project, and ``cairn policy add``: who may sign a source, without editing YAML.

A project is a folder with a project file (``cairn.yaml``) that every command run inside it reads:
its catalog, trust policy, release policy, suites and release specs are the defaults there, and
nothing of the demo is loaded. ``cairn init`` writes each file with what to edit in it, a
``workspace.yaml`` for Dagster, and the release signing key (in the home, never in the project's
files under version control). It refuses a folder that already holds a project.
"""

import argparse
import logging
from pathlib import Path
from typing import Any

from integrity.cli.common import AddCommand, add_json_option, add_signer_options, emit
from integrity.errors import EXIT_OK, UsageError

log = logging.getLogger(__name__)

CATALOG = """\
# The sources this project ingests. Each entry is one vendor drop; `cairn catalog check catalog.yaml`
# validates the file. URIs are relative to this folder (root: .), or file://, s3://, https://.
version: 1
description: {name}'s third-party datasets and foundation models
policy: trust-policy.yaml   # who may sign each source (`cairn policy add trust-policy.yaml SOURCE --key PUB`)
root: .
suites: suites
sources: {{}}
# Examples (remove the braces above, then uncomment and edit):
#   chest-xrays:
#     kind: dataset
#     uri: drops/chest-xrays           # a folder: images.npy + labels.npy, an .npz, or PNG/JPEG + labels.csv
#     format: npz                      # npy, npz, image-folder, csv, tsv, jsonl, parquet, dicom
#     license: CC-BY-4.0
#     origin: https://vendor.example/chest-xrays
#     suite: chest-xrays.json          # in suites/; declares the pixel range: "images": {{"range": [0, 255]}}
#     scan_profile: images             # images or tabular are screened; text, imaging: no screen yet
#   heart-failure:
#     kind: dataset
#     uri: drops/heart-failure
#     format: csv
#     license: CC-BY-4.0
#     origin: https://vendor.example/heart-failure
#     suite: heart-failure.json        # its "label": {{"column": "DEATH_EVENT"}} is what the screen checks
#     scan_profile: tabular
#   backbone:
#     kind: model
#     uri: drops/backbone
#     format: auto                     # pytorch, safetensors, onnx, numpy, auto
#     license: Apache-2.0
#     origin: https://vendor.example/backbone
#     scan_profile: image-classifier   # backdoor-scanned, probed with samples of its image dataset
"""

TRUST_POLICY = """\
# Who may sign each catalog source. Add a publisher with
#   cairn policy add trust-policy.yaml SOURCE --key vendor.pub              (a pinned key)
#   cairn policy add trust-policy.yaml SOURCE --identity ID --issuer URL    (Sigstore keyless)
version: 1
description: {name}'s trust policy
sources: {{}}
"""

RELEASE_POLICY = """\
# Who may sign each model's releases (an ordinary trust policy keyed by model name). For a new model:
#   cairn policy add release-policy.yaml MODEL --key .cairn/keys/release.pub
version: 1
description: {name}'s release policy
sources: {{}}
"""

WORKSPACE = """\
# Serve this project in Dagster: `cairn ui` from this folder (webserver, daemon and report server).
load_from:
  - python_module:
      module_name: pipelines.definitions
      attribute: defs
      working_directory: .
"""

README = """\
# {name}: a Cairn project

Every `cairn` command run in this folder reads `cairn.yaml`: the files below are its defaults, and
nothing of Cairn's demo is loaded.

| file | what to edit |
|---|---|
| `catalog.yaml` | one entry per vendor drop (dataset or model): where it is, its format, suite and scan profile |
| `trust-policy.yaml` | who may sign each source: `cairn policy add trust-policy.yaml SOURCE --key PUB` |
| `suites/*.json` | one suite per dataset: `label.column` (tables), `images.range` (images) |
| `releases/*.yaml` | one spec per model: inputs (`SOURCE/screened`), `architecture`, gate, card |
| `release-policy.yaml` | who signs releases: `cairn policy add release-policy.yaml MODEL --key KEY.pub` |
| `workspace.yaml` | the Dagster code location (`cairn ui` serves it) |

The Cairn home is `.cairn/` (drops fetched, attested copies, the store, keys, releases); keep it out of
version control. The release signing key is `.cairn/keys/release.key`.

In Dagster, run everything with one command from this folder:

    cairn ui      # the Dagster UI (http://127.0.0.1:3000), its daemon (run queue, schedules, sensors)
                  # and the report server its links open (http://127.0.0.1:3100); Ctrl-C stops all three

All of them use the one Dagster instance in `.cairn/dagster`. Dagster's own commands see the same runs
only with it named: `DAGSTER_HOME=$PWD/.cairn/dagster dagster asset materialize -m pipelines.definitions
--select 'SOURCE/attested'`. (`dagster dev` makes a temporary instance without this history, and
without the report server every record link is dead.) The drop sensor watches `drops/`
(`drop_location` in `cairn.yaml`).

Without Dagster:

    cairn catalog check catalog.yaml
    cairn ingest run --source SOURCE     # fetch, verify, validate, attest
    cairn screen --source SOURCE         # the poisoning screen (models: the backdoor scan)
    cairn release --spec releases/MODEL.yaml
"""


def _existing_keys(folder: Path, *, adopt: bool) -> str | None:
    """Keys already in the project's key folder: refused unless adopted, then checked to be one pair.

    A key someone left in the folder (or planted in a shared checkout) would otherwise sign every
    release of the new project without anyone having chosen it. Returns the adopted key's fingerprint.
    """
    from integrity.trust.signing import key_fingerprint, load_private_key, load_public_key

    keys = folder / ".cairn" / "keys"
    present = sorted(p.name for p in keys.iterdir()) if keys.is_dir() else []
    if keys.is_symlink() or (keys.exists() and not keys.is_dir()):
        raise UsageError("the key folder is a link or not a folder", artifact=keys, advice="Remove it first.")
    if not present:
        return None
    if not adopt:
        raise UsageError(f"this folder already holds keys ({', '.join(present)}); cairn init does not silently "
                         "adopt a release key it did not make", artifact=keys,
                         advice="Check where they came from; pass --adopt-keys to use them, or remove them.")
    private, public = keys / "release.key", keys / "release.pub"
    for path in (private, public):
        if path.is_symlink() or not path.is_file():
            raise UsageError(f"--adopt-keys needs {path.name} as a regular file", artifact=path)
    derived = key_fingerprint(load_private_key(private).public_key())
    if derived != key_fingerprint(load_public_key(public)):
        raise UsageError("release.key and release.pub are not one key pair", artifact=keys)
    return derived


def init_project(folder: Path, name: str | None = None, *, adopt_keys: bool = False) -> list[Path]:
    """Write a new project into ``folder`` (created if missing); returns the files written."""
    from integrity.trust.signing import atomic_write, generate_key_pair

    folder = folder.resolve()
    if (folder / "cairn.yaml").exists():
        raise UsageError("a Cairn project is already here", artifact=folder / "cairn.yaml",
                         advice="Edit its files, or choose an empty folder.")
    name = name or folder.name
    files = {
        "cairn.yaml": "# Cairn project settings (flags and environment variables win; see the README of Cairn).\n"
                      "home: .cairn\ncatalog: catalog.yaml\nrelease_spec: releases\n"
                      "release_policy: release-policy.yaml\nsuites: suites\n"
                      "# where vendors drop files (the Dagster drop sensor watches it): a folder or s3://bucket/prefix\n"
                      "drop_location: drops\n",
        "catalog.yaml": CATALOG.format(name=name),
        "trust-policy.yaml": TRUST_POLICY.format(name=name),
        "release-policy.yaml": RELEASE_POLICY.format(name=name),
        "workspace.yaml": WORKSPACE,
        "README.md": README.format(name=name),
        ".gitignore": ".cairn/\n",
    }
    existing = [n for n in files if (folder / n).exists()]
    if existing:
        raise UsageError(f"would overwrite {', '.join(existing)}", artifact=folder, advice="Choose an empty folder.")
    adopted = _existing_keys(folder, adopt=adopt_keys)
    if adopted:
        log.warning("adopting the release key already in %s (%s)", folder / ".cairn" / "keys", adopted)
    written = []
    for sub in ("suites", "releases", "drops", ".cairn/keys"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        atomic_write(folder / relative, text.encode())
        written.append(folder / relative)
    private, public = folder / ".cairn" / "keys" / "release.key", folder / ".cairn" / "keys" / "release.pub"
    if adopted is None:
        generate_key_pair(private, public)
    return [*written, public]


def cmd_init(args: argparse.Namespace) -> int:
    written = init_project(Path(args.dir), args.name, adopt_keys=args.adopt_keys)
    emit(args, {"project": str(Path(args.dir).resolve()), "files": [str(p) for p in written]},
         "\n".join([f"created the Cairn project {Path(args.dir).resolve()}:"]
                   + [f"  {p}" for p in written] + ["next: add a source to catalog.yaml (see README.md there)"]))
    return EXIT_OK


def cmd_policy_add(args: argparse.Namespace) -> int:
    """Add a signer to a source's entry (created if new) in a trust or release policy, atomically.

    The file keeps its comments and layout and its ``version`` goes up (:mod:`integrity.cli.policyfile`).
    """
    from integrity.cli.policyfile import add_signer, describe_signer, key_in_policy_folder, read_policy_document
    from integrity.trust.policy import load_policy
    from integrity.trust.signing import atomic_write, key_fingerprint, load_public_key

    path = Path(args.policy)
    policy = read_policy_document(path)
    document = policy.document
    if bool(args.key) == bool(args.identity or args.issuer):
        raise UsageError("name the signer: --key PUB, or --identity with --issuer (Sigstore)")
    copied = None
    if args.key:
        fingerprint = key_fingerprint(load_public_key(Path(args.key)))
        shown, copied = key_in_policy_folder(path, Path(args.key), args.source)
        signer: dict[str, Any] = {"key": {"fingerprint": fingerprint, "public_key": shown}}
    else:
        if not (args.identity and args.issuer):
            raise UsageError("Sigstore signers need both --identity and --issuer")
        signer = {"sigstore": {"identity": args.identity, "issuer": args.issuer}}
    changed = add_signer(document, args.source, signer, args.description or f"who may sign {args.source}")
    if changed:
        staged = path.with_name(f".{path.name}.new")
        atomic_write(staged, policy.render())
        try:
            load_policy(staged)  # the result must load: a broken policy is never written in place
        except Exception:
            staged.unlink(missing_ok=True)
            raise
        staged.replace(path)
    said = describe_signer(signer)
    emit(args, {"policy": str(path), "source": args.source, "signer": signer, "changed": changed,
                "version": document.get("version"), "copied_key": str(copied) if copied else None},
         (f"{path}: {args.source} may now be signed by {said} (policy version {document.get('version')})"
          if changed else f"{path}: {args.source} already lists {said}; nothing changed")
         + (f"\ncopied the key into the policy's folder: {copied} (commit it with the policy)" if copied else ""))
    return EXIT_OK


def register(add: AddCommand) -> None:
    p = add("init", cmd_init, "create a Cairn project (catalog, policies, suites, release specs, Dagster workspace)")
    p.add_argument("dir", help="the project folder (created if missing)")
    p.add_argument("--name", help="the project's name (default: the folder's)")
    p.add_argument("--adopt-keys", action="store_true",
                   help="use the release key pair already in DIR/.cairn/keys (refused without this flag)")


def register_policy(policy_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = policy_sub.add_parser("add", help="let a signer sign a source (trust policy) or a model (release policy)")
    c.set_defaults(handler=cmd_policy_add)
    c.add_argument("policy", help="the policy YAML to change")
    c.add_argument("source", help="catalog source (or model name, in a release policy)")
    add_signer_options(c)
    c.add_argument("--description", help="the entry's description, when it is new")
    add_json_option(c)
