"""``cairn demo``: verify real third-party artifacts as vendor drops, offline, into the default store.

It stages data from installed packages (scikit-learn's bundled breast-cancer and
digits datasets) as vendor drops signed by demo publishers it creates on first use
(a key publisher and a certificate publisher with its own CA), plus two drops that
must be refused: one tampered after signing and one signed by a key the policy does
not allow. Where the real third-party Sigstore bundles in ``../shared`` are present,
they are verified too, offline against the pinned production root. Everything is
attested through :func:`integrity.attest.attest` into the store; a second run
re-uses the publishers and drops and gives the same digests.
"""

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from integrity.attest import Attestation, attest
from integrity.errors import EXIT_OK, EXIT_REJECTED
from integrity.policy import load_policy
from integrity.signing import (
    CertificateSigner,
    KeySigner,
    atomic_write,
    generate_key_pair,
    key_fingerprint,
    load_public_key,
    sign_artifact,
)
from integrity.store import open_store

#: Where the shared, real third-party Sigstore bundles live when the repo sits beside them.
SHARED_FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "sigstore"
IBM_IDENTITY = ("stefanb@us.ibm.com", "https://sigstore.verify.ibm.com/oauth2")
WHEEL_IDENTITY = (
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
    "https://token.actions.githubusercontent.com",
)


def cairn_home() -> Path:
    return Path(os.environ.get("CAIRN_HOME", ".cairn")).resolve()


# -- demo publishers -------------------------------------------------------------------------------


def _publisher_key(folder: Path, name: str) -> tuple[Path, Path]:
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    if not private.exists():
        folder.mkdir(parents=True, exist_ok=True)
        generate_key_pair(private, public)
    return private, public


def _certificate_publisher(folder: Path) -> tuple[Path, Path, Path]:
    """A demo CA and a code-signing certificate for the digits publisher (created once)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_pem, leaf_pem, leaf_key = folder / "vendor-ca.pem", folder / "digits-release.pem", folder / "digits-release.key"
    if leaf_pem.exists() and ca_pem.exists() and leaf_key.exists():
        leaf = x509.load_pem_x509_certificate(leaf_pem.read_bytes())
        if leaf.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
            return ca_pem, leaf_pem, leaf_key
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Demo Vendor Root CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "digits release signing")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("releases@digits-vendor.example")]), False)
        .sign(ca_key, hashes.SHA256())
    )
    atomic_write(ca_pem, ca.public_bytes(serialization.Encoding.PEM))
    atomic_write(
        leaf_key,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        mode=0o600,
    )
    atomic_write(leaf_pem, leaf.public_bytes(serialization.Encoding.PEM))
    return ca_pem, leaf_pem, leaf_key


# -- vendor drops ------------------------------------------------------------------------------------


def _write_breast_cancer(folder: Path) -> None:
    from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]

    data = load_breast_cancer()
    lines = [",".join([*data.feature_names, "target"])]
    for row, label in zip(data.data, data.target, strict=True):
        lines.append(",".join(f"{v:.6g}" for v in row) + f",{int(label)}")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "breast_cancer.csv", ("\n".join(lines) + "\n").encode())
    atomic_write(folder / "LICENSE.txt", b"UCI ML Breast Cancer Wisconsin (Diagnostic), CC BY 4.0\n")


def _write_digits(folder: Path) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("images.npy", data.images.astype(np.uint8)), ("labels.npy", data.target.astype(np.int64))):
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp, folder / name)
    atomic_write(folder / "README.txt", b"Optical recognition of handwritten digits (UCI), 1797 8x8 images\n")


def _stage(drops: Path, keys: Path) -> dict[str, Path]:
    """Create the vendor drops once; later runs leave existing drops exactly as they are."""
    uci_key, _ = _publisher_key(keys, "uci-publisher")
    rogue_key, _ = _publisher_key(keys, "unapproved-publisher")
    _, leaf_pem, leaf_key = _certificate_publisher(keys)
    staged: dict[str, Path] = {}

    def once(name: str, build: Callable[[Path], None]) -> Path:
        folder = drops / name
        if not (folder / "model.sig").exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
        staged[name] = folder
        return folder

    def breast_cancer(folder: Path) -> None:
        _write_breast_cancer(folder)
        sign_artifact(folder, KeySigner.from_file(uci_key))

    def digits(folder: Path) -> None:
        _write_digits(folder)
        sign_artifact(folder, CertificateSigner.from_files(leaf_key, leaf_pem))

    def unofficial_digits(folder: Path) -> None:
        _write_digits(folder)
        sign_artifact(folder, KeySigner.from_file(rogue_key))

    once("breast-cancer", breast_cancer)
    once("digits", digits)

    def tampered(folder: Path) -> None:
        _write_breast_cancer(folder)
        sign_artifact(folder, KeySigner.from_file(uci_key))
        csv = folder / "breast_cancer.csv"
        text = csv.read_text().splitlines()
        fields = text[1].split(",")
        fields[-1] = "0" if fields[-1] == "1" else "1"  # one flipped label, after signing
        text[1] = ",".join(fields)
        atomic_write(csv, ("\n".join(text) + "\n").encode())

    once("breast-cancer-mirror", tampered)
    once("digits-unofficial", unofficial_digits)
    return staged


def _write_policy(path: Path, keys: Path) -> None:
    uci = key_fingerprint(load_public_key(keys / "uci-publisher.pub"))
    policy = {
        "version": 1,
        "description": "Demo trust policy written by `cairn demo`; review changes like code.",
        "sources": {
            "breast-cancer": {
                "license": "CC-BY-4.0",
                "origin": "https://archive.ics.uci.edu/dataset/17 (via scikit-learn)",
                "signers": [{"key": {"fingerprint": uci, "public_key": str(keys / "uci-publisher.pub")}}],
            },
            "digits": {
                "license": "CC-BY-4.0",
                "origin": "https://archive.ics.uci.edu/dataset/80 (via scikit-learn)",
                "signers": [
                    {"certificate": {"ca": str(keys / "vendor-ca.pem"), "identity": "releases@digits-vendor.example"}}
                ],
            },
            "sigstore-model-dir": {
                "license": "Apache-2.0",
                "origin": "sigstore/model-transparency test data (real production Sigstore signature)",
                "signers": [{"sigstore": {"identity": IBM_IDENTITY[0], "issuer": IBM_IDENTITY[1]}}],
            },
            "rfc8785-wheel": {
                "license": "Apache-2.0",
                "origin": "PyPI rfc8785 0.1.2 (real GitHub Actions Sigstore signature)",
                "signers": [{"sigstore": {"identity": WHEEL_IDENTITY[0], "issuer": WHEEL_IDENTITY[1]}}],
            },
        },
    }
    import yaml

    text = yaml.safe_dump(policy, sort_keys=False).encode()
    if not path.exists() or path.read_bytes() != text:
        atomic_write(path, text)


def run_demo(*, json_output: bool = False, home: Path | None = None) -> int:
    home = home or cairn_home()
    demo = home / "demo"
    keys, drops = demo / "publishers", demo / "drops"
    staged = _stage(drops, keys)
    policy_path = demo / "policy.yaml"
    _write_policy(policy_path, keys)
    policy = load_policy(policy_path)
    store = open_store(os.environ.get("CAIRN_STORE") or str(home / "store"))

    plan: list[tuple[str, Path, Path | None, bool]] = [
        ("breast-cancer", staged["breast-cancer"], None, True),
        ("digits", staged["digits"], None, True),
        ("breast-cancer", staged["breast-cancer-mirror"], None, False),
        ("digits", staged["digits-unofficial"], None, False),
    ]
    if (SHARED_FIXTURES / "README.md").is_file():
        plan.append(("sigstore-model-dir", SHARED_FIXTURES / "prod-model-dir", None, True))
        wheel = SHARED_FIXTURES / "prod-wheel" / "bundle_v3_github.whl"
        plan.append(("rfc8785-wheel", wheel, wheel.with_name(wheel.name + ".sigstore"), True))

    outcomes: list[tuple[Attestation, bool]] = []
    for source, path, bundle, expected in plan:
        outcomes.append((attest(path, policy, source, store, bundle=bundle), expected))

    rows = [{**o.as_row(), "artifact": str(o.artifact), "expected": "attested" if e else "quarantined"}
            for o, e in outcomes]
    unexpected = [r for r in rows if r["status"] != r["expected"]]
    if json_output:
        print(json.dumps({"policy": policy.describe(), "store": str(store), "results": rows}, indent=2))
    else:
        print(f"Cairn demo — policy {policy_path} (v{policy.version}, {policy.digest[:19]}…), store {store}\n")
        print("| source | drop | status | sha256 | reason |")
        print("|---|---|---|---|---|")
        for row in rows:
            digest = (row["digest"] or "-")[:16]
            reason = row["reason"].replace(str(demo) + "/", "").replace("|", "/")
            print(f"| {row['source']} | {Path(row['artifact']).name} | {row['status']} | {digest} | {reason} |")
        if not (SHARED_FIXTURES / "README.md").is_file():
            print(f"\n(real Sigstore bundles not found at {SHARED_FIXTURES}; skipped them)")
        print(f"\nRecords and quarantine reasons are in {store}. Re-running gives the same digests.")
        if unexpected:
            print(f"\nUNEXPECTED: {len(unexpected)} drop(s) did not end as expected")
    return EXIT_REJECTED if unexpected else EXIT_OK
