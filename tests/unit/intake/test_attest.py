"""Verify-then-store: good artifacts enter the trusted area; every bad input goes to quarantine
with its reason and leaves the trusted area exactly as it was."""

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from integrity.intake.attest import attest
from integrity.storage import open_store
from integrity.trust.methods.certificate import CertificateSigner
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import load_policy
from integrity.trust.signing import sign_artifact
from tests.support.pki import NOW, TestPKI


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the trusted area with its digest: 'unchanged' means equal snapshots."""
    trusted = root / "trusted"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(trusted.rglob("*")) if p.is_file()
    } if trusted.exists() else {}


@pytest.fixture
def world(tmp_path: Path, pki: TestPKI) -> dict:
    private, public, fingerprint = pki.key_pair("vendor")
    ca_key, ca_cert, ca_pem = pki.ca()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nsources:\n"
        f'  vendor:\n    signers:\n      - key: {{fingerprint: "{fingerprint}", public_key: "{public}"}}\n'
        f'  certified:\n    signers:\n      - certificate: {{ca: "{ca_pem}", identity: releases@vendor.example}}\n'
        "  nobody:\n    signers: []\n"
    )
    store_root = tmp_path / "store"
    store = open_store(str(store_root))
    # One artifact is already trusted before the bad inputs arrive.
    good = tmp_path / "good"
    good.mkdir()
    (good / "weights.bin").write_bytes(os.urandom(5000))
    sign_artifact(good, KeySigner.from_file(private))
    first = attest(good, load_policy(policy), "vendor", store)
    assert first.attested, first.reason
    return {
        "tmp": tmp_path, "private": private, "policy": policy, "store": store, "store_root": store_root,
        "pki": pki, "ca": (ca_key, ca_cert),
    }


def _signed(world: dict, name: str = "drop") -> Path:
    folder = world["tmp"] / name
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(os.urandom(4000))
    (folder / "sub" / "config.json").write_text('{"a": 1}')
    sign_artifact(folder, KeySigner.from_file(world["private"]))
    return folder


def changed_byte(world: dict) -> tuple[Path, str]:
    folder = _signed(world)
    data = bytearray((folder / "weights.bin").read_bytes())
    data[7] ^= 1
    (folder / "weights.bin").write_bytes(bytes(data))
    return folder, "changed: weights.bin"


def added_file(world: dict) -> tuple[Path, str]:
    folder = _signed(world)
    (folder / "payload.py").write_text("import os")
    return folder, "added: payload.py"


def removed_file(world: dict) -> tuple[Path, str]:
    folder = _signed(world)
    (folder / "sub" / "config.json").unlink()
    return folder, "removed: sub/config.json"


def renamed_file(world: dict) -> tuple[Path, str]:
    folder = _signed(world)
    (folder / "weights.bin").rename(folder / "weights2.bin")
    return folder, "renamed: weights.bin -> weights2.bin"


def rogue_key(world: dict) -> tuple[Path, str]:
    folder = world["tmp"] / "rogue"
    folder.mkdir()
    (folder / "w").write_text("w")
    rogue_private, _, _ = world["pki"].key_pair("rogue")
    sign_artifact(folder, KeySigner.from_file(rogue_private))
    return folder, "key the policy does not list"


def truncated_bundle(world: dict) -> tuple[Path, str]:
    folder = _signed(world)
    sig = folder / "model.sig"
    sig.write_text(sig.read_text()[:200])
    return folder, "not valid JSON"


def unsigned(world: dict) -> tuple[Path, str]:
    folder = world["tmp"] / "unsigned"
    folder.mkdir()
    (folder / "w").write_text("w")
    return folder, "no signature bundle"


def symlink_out(world: dict) -> tuple[Path, str]:
    folder = _signed(world)
    (world["tmp"] / "outside").write_text("secret")
    (folder / "link").symlink_to(world["tmp"] / "outside")
    return folder, "points outside the artifact"


def expired_certificate(world: dict) -> tuple[Path, str]:
    ca_key, ca_cert = world["ca"]
    issued = world["pki"].leaf(ca_key, ca_cert, "releases@vendor.example",
                               not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=2))
    folder = world["tmp"] / "expired"
    folder.mkdir()
    (folder / "w").write_text("w")
    sign_artifact(folder, CertificateSigner.from_files(issued.key, issued.certificate))
    return folder, "valid only from"


BAD_INPUTS: dict[str, tuple[str, Callable[[dict], tuple[Path, str]]]] = {
    "changed-byte": ("vendor", changed_byte),
    "added-file": ("vendor", added_file),
    "removed-file": ("vendor", removed_file),
    "renamed-file": ("vendor", renamed_file),
    "unapproved-key": ("vendor", rogue_key),
    "truncated-bundle": ("vendor", truncated_bundle),
    "unsigned": ("vendor", unsigned),
    "symlink-out-of-tree": ("vendor", symlink_out),
    "expired-certificate": ("certified", expired_certificate),
    "empty-policy": ("nobody", lambda w: (_signed(w), "rejects everything")),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_quarantined_and_trusted_area_unchanged(world: dict, case: str) -> None:
    source, make = BAD_INPUTS[case]
    before = snapshot(world["store_root"])
    artifact, expected_reason = make(world)
    outcome = attest(artifact, load_policy(world["policy"]), source, world["store"])
    assert not outcome.attested
    assert expected_reason in outcome.reason
    assert snapshot(world["store_root"]) == before
    record = world["store"].get_record("verifications", outcome.record_key.rsplit("/", 1)[-1].removesuffix(".json"))
    assert record["predicate"]["result"] == "failed"
    assert expected_reason in record["predicate"]["reason"]
    reasons = [entry.reason for entry in world["store"].list_quarantine()]
    assert any(expected_reason in reason for reason in reasons), reasons


def test_good_input_is_attested_with_record(world: dict) -> None:
    folder = _signed(world, "fresh")
    outcome = attest(folder, load_policy(world["policy"]), "vendor", world["store"])
    assert outcome.attested
    record = world["store"].get_record("verifications", outcome.record_key.rsplit("/", 1)[-1].removesuffix(".json"))
    assert record["predicate"]["result"] == "passed"
    assert record["subject"][0]["digest"]["sha256"] == outcome.digest
    assert json.dumps(record)  # serialisable as stored
