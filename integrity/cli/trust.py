"""``cairn hash``, ``sign``, ``verify``, ``key`` and ``policy``: the trust commands
(they import no torch, Dagster or Great Expectations)."""

import argparse
from pathlib import Path
from typing import Any

from integrity.cli.common import (
    AddCommand,
    add_json_option,
    add_renamed_option,
    add_signer_options,
    emit,
    hashing_config,
    write_record,
)
from integrity.errors import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, CairnError, UsageError


def cmd_hash(args: argparse.Namespace) -> int:
    from integrity.trust.hashing import hash_artifact
    from integrity.trust.manifests import iter_manifest_lines

    manifest = hash_artifact(args.path, hashing_config(args))
    path = Path(args.path)
    digest = manifest.resources[0].digest if path.is_file() else manifest.root_digest
    data = {
        "artifact": str(path),
        "sha256": digest,
        "manifest_root": manifest.root_digest,
        "serialization": manifest.config.serialization(),
        "resources": [{"name": r.name, "sha256": r.digest} for r in manifest.resources],
    }
    if path.is_file() and manifest.config.method == "files":
        text = f"{digest}  {path}"
    else:
        text = "\n".join([*iter_manifest_lines(manifest), f"{manifest.root_digest}  (manifest root of {path})"])
    emit(args, data, text)
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from integrity.trust.methods.certificate import CertificateSigner
    from integrity.trust.methods.key import KeySigner
    from integrity.trust.methods.sigstore import KeylessSigner
    from integrity.trust.signing import Signer, sign_artifact

    signer: Signer
    if args.keyless:
        if args.key or args.certificate:
            raise UsageError("--keyless cannot be combined with --key or --certificate")
        signer = KeylessSigner(
            trust_config=Path(args.trust_config) if args.trust_config else None,
            identity_token=args.identity_token,
        )
    elif args.certificate:
        if not args.key:
            raise UsageError("--certificate needs --key (the certificate's private key)")
        signer = CertificateSigner.from_files(args.key, args.certificate, args.chain)
    elif args.key:
        signer = KeySigner.from_file(args.key)
    else:
        raise UsageError("choose a signing method: --key, --certificate with --key, or --keyless")
    result = sign_artifact(args.path, signer, signature_path=args.signature, config=hashing_config(args))
    data = {
        "artifact": str(result.artifact),
        "signature": str(result.signature),
        "manifest_root": result.manifest.root_digest,
        "files": len(result.manifest.files),
        "signer": result.signer,
    }
    emit(args, data, f"signed {result.artifact} ({len(result.manifest.files)} file(s)) -> {result.signature}")
    return EXIT_OK


def _signer_rule(args: argparse.Namespace) -> Any:
    from integrity.trust.policy import CertificateIdentity, PublicKey, SigstoreIdentity
    from integrity.trust.signing import certificate_fingerprint, key_fingerprint, load_public_key

    chosen = [bool(args.policy), bool(args.key), bool(args.ca), bool(args.issuer)]
    if sum(chosen) != 1:
        raise UsageError(
            "choose exactly one way to say who may sign: --identity with --issuer (Sigstore), "
            "--key (pinned public key), --ca with --identity (certificate), or --policy with --source"
        )
    if args.key:
        key = load_public_key(args.key)
        return PublicKey(key_fingerprint(key), key)
    if args.ca:
        if not args.identity:
            raise UsageError("--ca needs --identity (the certificate subject allowed to sign)")
        from cryptography import x509

        try:
            cas = tuple(x509.load_pem_x509_certificates(Path(args.ca).read_bytes()))
            tsa = tuple(x509.load_pem_x509_certificates(Path(args.tsa).read_bytes())) if args.tsa else ()
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load certificates: {exc}", artifact=args.ca) from exc
        return CertificateIdentity(args.identity, cas, tuple(certificate_fingerprint(c) for c in cas), tsa)
    if not args.identity:
        raise UsageError("--issuer needs --identity: Cairn never accepts 'any signer'")
    return SigstoreIdentity(args.identity, args.issuer, args.trusted_root or "production")


def cmd_verify(args: argparse.Namespace) -> int:
    from integrity.trust.policy import load_policy
    from integrity.trust.records import dumps, record_for_failure, record_for_result
    from integrity.trust.verifying import verify_artifact, verify_source

    policy = None
    if args.policy:
        if not args.source:
            raise UsageError("--policy needs --source (the policy entry to apply)")
        if any([args.key, args.ca, args.issuer]):
            raise UsageError("--policy cannot be combined with --identity/--issuer, --key or --ca")
        policy = load_policy(args.policy)
    elif args.source:
        raise UsageError("--source needs --policy")
    try:
        if policy is not None:
            result = verify_source(
                args.path, policy, args.source, bundle=args.signature, trusted_root=args.trusted_root
            )
        else:
            result = verify_artifact(
                args.path, _signer_rule(args), bundle=args.signature, trusted_root=args.trusted_root
            )
    except CairnError as error:
        if args.record and error.exit_code == EXIT_REJECTED:
            write_record(args.record, dumps(record_for_failure(args.path, error, source=args.source,
                                                                policy=policy, bundle=args.signature)))
        raise
    if args.record:
        write_record(args.record, dumps(record_for_result(result)))
    signer = result.evidence.describe()
    emit(
        args,
        result.as_dict(),
        f"verified {result.artifact}: {result.kind} sha256 {result.digest}, signed by {signer}"
        + (f" (policy v{policy.version} {policy.digest}, source {args.source})" if policy else ""),
    )
    return EXIT_OK


def cmd_key_generate(args: argparse.Namespace) -> int:
    from integrity.trust.signing import generate_key_pair

    private, public = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    if (private.exists() or public.exists()) and not args.force:
        raise UsageError(f"{private} or {public} exists; pass --force to replace it")
    private.parent.mkdir(parents=True, exist_ok=True)
    public.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = generate_key_pair(private, public)
    emit(args, {"private_key": str(private), "public_key": str(public), "fingerprint": fingerprint},
          f"wrote {private} and {public}\nfingerprint {fingerprint}")
    return EXIT_OK


def cmd_key_fingerprint(args: argparse.Namespace) -> int:
    from integrity.trust.signing import key_fingerprint, load_public_key, oms_key_hint

    key = load_public_key(args.public_key)
    data = {"fingerprint": key_fingerprint(key), "model_signing_hint": oms_key_hint(key)}
    emit(args, data, data["fingerprint"])
    return EXIT_OK


def cmd_policy_check(args: argparse.Namespace) -> int:
    from integrity.trust.policy import load_policy

    policy = load_policy(args.policy)
    data = {
        **policy.describe(),
        "sources": {
            name: {"signers": [r.describe() for r in s.signers.rules], "digests": list(s.digests),
                   "license": s.license, "origin": s.origin}
            for name, s in policy.sources.items()
        },
    }
    lines = [f"policy {policy.path}: version {policy.version}, {policy.digest}"]
    for name, source in policy.sources.items():
        signers = "; ".join(r.describe() for r in source.signers.rules) or "NO SIGNERS (rejects everything)"
        lines.append(f"  {name}: {signers}")
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def register(add: AddCommand) -> None:
    """Register this group's commands with the parser's ``add``."""
    p = add("hash", cmd_hash, "SHA-256 of a file, or the model-signing manifest of a directory")
    p.add_argument("path")
    p.add_argument("--shard-size", type=int, help="hash in shards of this many bytes (parallel within files)")
    p.add_argument("--workers", type=int, help="threads to hash with (default: all cores)")

    p = add("sign", cmd_sign, "sign a file or directory (OpenSSF model-signing format)")
    p.add_argument("path")
    p.add_argument("--signature", help="where to write the bundle (default DIR/model.sig or FILE.sig)")
    p.add_argument("--key", help="PEM private key (key method, or the certificate's key)")
    p.add_argument("--certificate", help="PEM signing certificate (certificate method)")
    p.add_argument("--chain", action="append", default=[], help="PEM intermediate certificates")
    p.add_argument("--keyless", action="store_true", help="Sigstore keyless signing with ambient OIDC credentials")
    p.add_argument("--trust-config", help="Sigstore client trust config JSON (default: production)")
    p.add_argument("--identity-token", help="OIDC identity token (default: $SIGSTORE_ID_TOKEN or ambient)")
    p.add_argument("--shard-size", type=int, help="sign a sharded manifest (parallel hashing within files)")
    p.add_argument("--workers", type=int, help="hashing threads")

    p = add("verify", cmd_verify, "verify a file or directory against its signature and a signer policy")
    p.add_argument("path")
    p.add_argument("--signature", help="the signature bundle (default DIR/model.sig or FILE.sig)")
    add_renamed_option(p, "--bundle", "--signature")
    add_signer_options(p, certificates=True)
    p.add_argument("--policy", help="trust policy YAML")
    p.add_argument("--source", help="source entry in the trust policy")
    p.add_argument("--trusted-root", help="Sigstore trusted root: production (default), staging or a JSON file")
    p.add_argument("--record", help="write the verification record (in-toto statement) here")

    p = add("key", lambda a: EXIT_USAGE, "manage signing keys")
    key_sub = p.add_subparsers(dest="key_command", required=True)
    g = key_sub.add_parser("generate", help="create an ECDSA P-256 key pair")
    g.set_defaults(handler=cmd_key_generate)
    g.add_argument("--out", required=True, help="path prefix: writes PREFIX.key and PREFIX.pub")
    g.add_argument("--force", action="store_true")
    add_json_option(g)
    f = key_sub.add_parser("fingerprint", help="print a public key's fingerprint")
    f.set_defaults(handler=cmd_key_fingerprint)
    f.add_argument("public_key")
    add_json_option(f)

    p = add("policy", lambda a: EXIT_USAGE, "inspect and extend trust policies")
    pol_sub = p.add_subparsers(dest="policy_command", required=True)
    c = pol_sub.add_parser("check", help="validate a policy file and print its digest")
    c.set_defaults(handler=cmd_policy_check)
    c.add_argument("policy")
    add_json_option(c)
    from integrity.cli.project import register_policy

    register_policy(pol_sub)
