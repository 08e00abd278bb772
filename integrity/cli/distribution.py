"""``cairn publish``, ``pull``, ``presign``, ``revoke`` and ``serve`` (registered by :mod:`integrity.cli`)."""

import argparse
import json
from pathlib import Path
from typing import Any

from integrity.cli.common import AddCommand, add_location_options, add_renamed_option, emit
from integrity.errors import EXIT_OK, EXIT_USAGE, UsageError


def settings(args: argparse.Namespace) -> Any:
    """The settings with this command's flags on top (flag > environment > project file > default)."""
    from integrity.settings import current

    return current(home=getattr(args, "home", None), store=getattr(args, "store", None),
                   release_policy=getattr(args, "release_policy", None), pull_state=getattr(args, "state", None),
                   pull_timeout=getattr(args, "timeout", None), ledger_public_key=getattr(args, "ledger_key", None))


def _home(args: argparse.Namespace) -> Path:
    home: Path = settings(args).home
    return home


def _store(args: argparse.Namespace) -> Any:
    from integrity.storage import open_store

    return open_store(settings(args).store)


def release_policy(args: argparse.Namespace, model: str | None) -> Any:
    """The release policy: ``--release-policy`` YAML, or one pinned ``--key`` for ``model``."""
    from integrity.trust.policy import AnyOf, PublicKey, SourcePolicy, TrustPolicy, load_policy

    if getattr(args, "key", None):
        if getattr(args, "release_policy", None):
            raise UsageError("choose --release-policy or --key, not both")
        if model is None:
            raise UsageError("--key needs the model name (the release policy entry it stands for)")
        from integrity.trust.signing import key_fingerprint, load_public_key

        key = load_public_key(args.key)
        fingerprint = key_fingerprint(key)
        return TrustPolicy(1, {model: SourcePolicy(model, AnyOf((PublicKey(fingerprint, key),)))}, None,
                           fingerprint)
    path: Path = settings(args).release_policy
    if not path.is_file():
        raise UsageError(f"no release policy at {path}; pass --release-policy FILE or --key release.pub")
    return load_policy(path)


def _ledger_for_pull(args: argparse.Namespace, store: Any) -> Any:
    from integrity.ledger import Ledger

    public = settings(args).ledger_public_key
    if not public:
        return None
    if store is None:
        raise UsageError("--ledger-key needs a store the ledger is in (not available through a pull ticket)")
    return Ledger(store, public_key=Path(public))


def cmd_publish(args: argparse.Namespace) -> int:
    from integrity.distribution import Retention, publish, read_index
    from integrity.distribution.revocations import consult, revocation_stores
    from integrity.ledger.transparency import open_ledger
    from integrity.release.revocation import RevocationList

    bundle = Path(args.bundle)
    model = read_index(bundle).model
    policy = release_policy(args, model)
    store = _store(args)
    ledger = None if args.no_ledger else open_ledger(store, home=_home(args))
    retention = Retention(args.retention_mode, args.retain_days) if args.retain_days else None
    authority = policy.source(model).signers
    sources = revocation_stores(settings(args).revocation_sources, besides=store.url)
    consulted = consult(authority, RevocationList.load(store, authority), store.url, sources)
    result = publish(store, bundle, policy, ledger=ledger, retention=retention, revocations=consulted.revocations)
    what = "published" if result.created else "already published (no change)"
    locked = f"; Object Lock {', '.join(result.as_dict()['retention']['modes'])} on {len(result.retention)} " \
             f"objects" if result.retention else ""
    emit(args, result.as_dict(),
          f"{what}: {result.reference} (sequence {result.sequence}) -> {result.publication_key}\n"
          f"{result.objects} objects ({result.objects_new} new, {result.bytes} bytes){locked}"
          + (f"; ledger entry {result.ledger_index}" if result.ledger_index is not None else ""))
    return EXIT_OK


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError("a timeout must be positive")
    return value


def cmd_pull(args: argparse.Namespace) -> int:
    from integrity.distribution import PullState, StoreSource, TicketSource, parse_reference, pull
    from integrity.distribution.revocations import revocation_stores

    store = None
    if args.ticket:
        if args.store:
            raise UsageError("choose --store or --ticket, not both")
        source: Any = TicketSource.load(args.ticket)
        reference = args.release or f"{source.ticket.get('model')}@{source.ticket.get('version')}"
    else:
        if not args.release:
            raise UsageError("name the release: cairn pull MODEL[@VERSION] --dest DIR")
        store = _store(args)
        source = StoreSource(store, connections=args.connections)
        reference = args.release
    model, version = parse_reference(reference)
    policy = release_policy(args, model)
    state = PullState(settings(args).pull_state)
    sources = revocation_stores(settings(args).revocation_sources, besides=store.url if store else None)
    result = pull(source, model, version, args.dest, policy, state=state, ledger=_ledger_for_pull(args, store),
                  progress=False if args.no_progress else None, workers=args.workers,
                  timeout=settings(args).pull_timeout, revocation_sources=sources)
    emit(args, result.as_dict(),
          f"pulled {result.reference} (sequence {result.sequence}, {result.files} files, {result.bytes} bytes) "
          f"into {result.dest}\nverified: signed by {result.signer}; every digest matches the signed index"
          + ("; index matches the transparency ledger" if result.ledger_checked else ""))
    return EXIT_OK


def cmd_presign(args: argparse.Namespace) -> int:
    from integrity.distribution import parse_reference, presign
    from integrity.trust.signing import atomic_write

    model, version = parse_reference(args.release)
    ticket = presign(_store(args), model, version, release_policy(args, model), expires_in=args.expires)
    atomic_write(args.out, json.dumps(ticket, indent=2, sort_keys=True).encode(), mode=0o600)
    emit(args, {"ticket": str(args.out), "release": f"{ticket['model']}@{ticket['version']}",
                 "expires_at": ticket["expires_at"], "objects": len(ticket["objects"])},
          f"wrote pull ticket {args.out} for {ticket['model']}@{ticket['version']} (expires {ticket['expires_at']})\n"
          f"hand it over; the recipient runs: cairn pull --ticket {args.out} --dest DIR --key release.pub")
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    from integrity.distribution.ledgered import revoke_and_log
    from integrity.ledger.transparency import open_ledger
    from integrity.release.revocation import revocation_subject
    from integrity.trust.methods.key import KeySigner
    from integrity.trust.methods.sigstore import KeylessSigner
    from integrity.trust.signing import Signer

    chosen = [(k, v) for k, v in (("release", args.release), ("source", args.source), ("signer", args.signer),
                                  ("policy", args.policy_digest), ("artifact", args.artifact)) if v]
    if len(chosen) != 1:
        raise UsageError("revoke exactly one thing: MODEL@VERSION, --source, --signer, --policy-digest or --artifact")
    kind, subject = chosen[0]
    signer: Signer
    if args.keyless:
        signer = KeylessSigner(identity_token=args.identity_token)
    else:
        key = Path(args.key) if args.key else _home(args) / "keys" / "release.key"
        if not key.is_file():
            raise UsageError(f"no revocation signing key at {key}; pass --key (the release identity's private key)")
        signer = KeySigner.from_file(key)
    store = _store(args)
    from integrity.distribution.incidents import find_subject

    kind, subject = revocation_subject(kind, subject)
    known, consumed = find_subject(store, kind, subject)
    affected = [c.reference for c in consumed]
    refused = not known and not args.force
    if args.dry_run:  # predicts the real run: its exit code too
        emit(args, {"dry_run": True, "kind": kind, "subject": subject, "known": known, "affected": affected,
                    "would_exit": EXIT_USAGE if refused else EXIT_OK},
             f"would {'REFUSE to revoke' if refused else 'revoke'} {kind} {subject} "
             f"({'known' if known else 'NOT FOUND'} in {store.url}"
             f"{'; pass --force to revoke it anyway' if refused else ''}); "
             f"published releases affected: {', '.join(affected) or 'none'} (nothing was signed or written)")
        return EXIT_USAGE if refused else EXIT_OK
    if refused:
        raise UsageError(f"{kind} {subject!r} is not known to {store.url}: no publication, release input or "
                         "verification record names it (a typo?); nothing was revoked",
                         advice="Check the name, or pass --force to revoke it anyway.")
    revocation, entry = revoke_and_log(store, signer, kind, subject, args.reason,
                                       ledger=open_ledger(store, home=_home(args)))
    emit(args, {**revocation.as_dict(), "ledger_index": entry},
          f"revoked {kind} {subject}: {revocation.reason}\nrecord {revocation.record_key}; ledger entry {entry}\n"
          "pulls and audits of affected releases now fail")
    return EXIT_OK


def add_distribution_commands(add: AddCommand) -> None:
    """Register the distribution subcommands on ``cairn``'s parser."""

    def common(p: argparse.ArgumentParser, *, policy: bool = True) -> None:
        add_location_options(p)
        if policy:
            p.add_argument("--release-policy", help="release policy YAML (default HOME/release-policy.yaml)")
            p.add_argument("--key", help="instead of a policy: the release identity's pinned public key (PEM)")

    p = add("publish", cmd_publish, "publish a signed release bundle to the store (objects first, index last)")
    p.add_argument("bundle", help="the release bundle folder (release.json, release.json.sig, model/, ...)")
    common(p)
    p.add_argument("--retain-days", type=int, help="S3 Object Lock retention in days (default 3650 where enabled)")
    p.add_argument("--retention-mode", default="GOVERNANCE", choices=["GOVERNANCE", "COMPLIANCE"])
    p.add_argument("--no-ledger", action="store_true", help="do not log the publication (not recommended)")

    p = add("pull", cmd_pull, "download, verify and only then place a release in DIR (untouched on failure)")
    p.add_argument("release", nargs="?", help="MODEL or MODEL@VERSION (default with --ticket: the ticket's)")
    p.add_argument("--dest", required=True, help="destination folder: new, or empty")
    common(p)
    p.add_argument("--ticket", help="pull through a pull ticket (presigned URLs; no bucket credentials)")
    p.add_argument("--state", help="rollback record (default $CAIRN_PULL_STATE or HOME/pull-state.json)")
    p.add_argument("--ledger-key", help="also check the index against the transparency ledger (its public key)")
    p.add_argument("--workers", type=int, default=4, help="files downloaded at the same time")
    p.add_argument("--connections", type=int, default=1,
                   help="ranged GETs per large S3 object (default 1: one GET; try 8 on AWS S3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--timeout", type=_seconds, default=None,
                   help="seconds the whole pull may take (default $CAIRN_PULL_TIMEOUT or 1800); each request also "
                        "times out after $CAIRN_S3_TIMEOUT (20) seconds")

    p = add("presign", cmd_presign, "write a pull ticket: presigned URLs for someone without bucket credentials")
    p.add_argument("release", help="MODEL or MODEL@VERSION")
    p.add_argument("--out", required=True, help="where to write the ticket (JSON)")
    p.add_argument("--expires", type=int, default=3600, help="seconds the URLs stay valid (default 3600)")
    common(p)

    p = add("serve", cmd_serve, "serve records, Data Docs, lineage and audits over HTTP (read-only) for the UI")
    add_location_options(p)
    p.add_argument("--reports-url", help="the URL the UI links to (default $CAIRN_REPORTS_URL or "
                                         "http://127.0.0.1:3100); the server listens on its port")
    p.add_argument("--host", help="address to listen on (default: the host of the reports URL)")
    p.add_argument("--port", type=int, help="port to listen on (default: the port of the reports URL)")

    p = add("revoke", cmd_revoke, "sign and record a revocation; pulls and audits of affected releases fail")
    p.add_argument("release", nargs="?", help="MODEL@VERSION of a published release")
    p.add_argument("--source", help="revoke a catalog source (every version of it)")
    p.add_argument("--signer", help="revoke a signer: sha256:<key or certificate fingerprint> or an identity")
    p.add_argument("--policy-digest", help="revoke a policy version: sha256:<policy file digest>")
    p.add_argument("--artifact", help="revoke exact bytes: sha256:<content digest>")
    p.add_argument("--reason", required=True, help="why (auditors read it)")
    p.add_argument("--key", help="the revocation authority's private key (PEM; default HOME/keys/release.key)")
    add_renamed_option(p, "--signing-key", "--key")
    p.add_argument("--keyless", action="store_true", help="sign keyless with Sigstore instead")
    p.add_argument("--identity-token", help="OIDC token for --keyless")
    p.add_argument("--dry-run", action="store_true", help="say what would be revoked and which releases it affects")
    p.add_argument("--force", action="store_true", help="revoke a release, source or signer the store does not know")
    common(p, policy=False)


def listen_address(reports_url: str | None, host: str | None, port: int | None) -> tuple[str, int]:
    """Where the report server listens: the flags, else the host and port of the reports URL."""
    from urllib.parse import urlsplit

    parsed = urlsplit(reports_url or "")
    try:
        url_port = parsed.port
    except ValueError as exc:
        raise UsageError(f"the reports URL {reports_url!r} has an invalid port") from exc
    chosen = port if port is not None else (url_port or (443 if parsed.scheme == "https" else 80))
    if not 0 <= chosen <= 65535:
        raise UsageError(f"--port {chosen}: not a TCP port")
    return host or parsed.hostname or "127.0.0.1", chosen


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the store's records and the releases folder until interrupted."""
    import logging

    from integrity.distribution.reports import ReportServer
    from integrity.storage import open_store

    config = settings(args).with_flags(reports_url=args.reports_url)
    host, port = listen_address(config.reports_url, args.host, args.port)
    server = ReportServer(open_store(config.store), config.releases, host=host, port=port, home=config.home,
                          public_url=config.reports_url)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    emit(args, {"url": server.url, "store": config.store, "releases": str(config.releases)},
         f"serving {config.store} and {config.releases} at {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return EXIT_OK
