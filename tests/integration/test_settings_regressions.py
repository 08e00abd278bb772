"""Regressions of configuration read in many places: each command now resolves its settings once.

Before :mod:`integrity.settings`, ``cairn audit`` checked revocations in the local store while the
release had been revoked in S3 (AUDIT PASSED for a revoked release); ``cairn ingest``/``cairn release``
ignored ``$CAIRN_CATALOG``/``$CAIRN_RELEASE_SPEC``; ``cairn publish``/``cairn pull`` ignored
``$CAIRN_RELEASE_POLICY``. Each test below runs the real CLI in a subprocess.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401

MODEL = "digits-classifier"


def cairn(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
          ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_") or k == "CAIRN_S3_ENDPOINT_URL"}
    return subprocess.run([sys.executable, "-m", "integrity.cli", *map(str, args)], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=300, cwd=cwd)


@pytest.fixture
def release(tmp_path: Path) -> dict[str, Path]:
    private, public = make_release_key(tmp_path / "keys")
    (tmp_path / "policies").mkdir()
    policy = write_release_policy(tmp_path / "policies" / "release-policy.yaml", MODEL, public)
    bundle = write_test_bundle(tmp_path / "bundle", private, model=MODEL, version="1.0.0", sequence=1,
                               weights_size=4096)
    home = tmp_path / "home"
    (home / "store").mkdir(parents=True)  # a local store exists too: the wrong one to ask
    return {"private": private, "policy": policy, "bundle": bundle, "home": home}


def test_audit_sees_a_revocation_in_the_store_the_release_was_published_to(
        tmp_path: Path, release: dict[str, Path], s3_bucket: S3Bucket) -> None:  # noqa: F811
    store = f"{s3_bucket.url}/cairn"
    home = release["home"]
    common = ["--store", store, "--home", home, "--release-policy", release["policy"]]
    assert cairn("publish", release["bundle"], *common).returncode == 0
    dest = tmp_path / "pulled"
    pulled = cairn("pull", f"{MODEL}@1.0.0", "--dest", dest, *common, "--no-progress")
    assert pulled.returncode == 0, pulled.stderr
    before = cairn("audit", dest, "--release-policy", release["policy"], "--home", home)
    assert before.returncode == 0, before.stdout + before.stderr
    assert f"in {store} (the store it was pulled from)" in before.stdout

    revoked = cairn("revoke", f"{MODEL}@1.0.0", "--reason", "trained on a recalled dataset", "--store", store,
                    "--home", home, "--key", release["private"])
    assert revoked.returncode == 0, revoked.stderr
    # The pulled copy: the pull state remembers where it came from.
    after = cairn("audit", dest, "--release-policy", release["policy"], "--home", home)
    assert after.returncode == 1, after.stdout
    assert "trained on a recalled dataset" in after.stdout + after.stderr
    # The publisher's own bundle, with the store named by flag, by environment and by project file.
    assert cairn("audit", release["bundle"], "--release-policy", release["policy"], "--store", store).returncode == 1
    assert cairn("audit", release["bundle"], "--release-policy", release["policy"],
                 env={"CAIRN_STORE": store}).returncode == 1
    project = tmp_path / "project"
    project.mkdir()
    (project / "cairn.yaml").write_text(f"store: {store}\nhome: ../home\n")
    assert cairn("audit", release["bundle"], "--release-policy", release["policy"], cwd=project).returncode == 1
    # Asked about a store the release was never published to: it says so instead of a silent pass.
    elsewhere = cairn("audit", release["bundle"], "--release-policy", release["policy"], "--home", home,
                      env={"CAIRN_PULL_STATE": str(tmp_path / "no-state.json")})
    assert elsewhere.returncode == 0
    assert "holds no publication of digits-classifier@1.0.0" in elsewhere.stdout


def test_publish_and_pull_honour_cairn_release_policy(tmp_path: Path, release: dict[str, Path]) -> None:
    env = {"CAIRN_RELEASE_POLICY": str(release["policy"]), "CAIRN_HOME": str(release["home"])}
    published = cairn("publish", release["bundle"], env=env)
    assert published.returncode == 0, published.stderr
    pulled = cairn("pull", f"{MODEL}@1.0.0", "--dest", tmp_path / "out", "--no-progress", env=env)
    assert pulled.returncode == 0, pulled.stderr
    # Without the variable the home has no release policy: a usage error naming where it looked.
    missing = cairn("publish", release["bundle"], env={"CAIRN_HOME": str(release["home"])})
    assert missing.returncode == 2 and "release-policy.yaml" in missing.stderr


def test_ingest_honours_cairn_catalog(tmp_path: Path) -> None:
    catalog = tmp_path / "mine.yaml"
    catalog.write_text("version: 1\npolicy: policy.yaml\nsources:\n  my-table:\n    kind: dataset\n"
                       "    uri: drops/my-table\n    format: csv\n")
    (tmp_path / "policy.yaml").write_text("version: 1\nsources: {}\n")
    run = cairn("ingest", "fetch", "--json", "--home", tmp_path / "home", env={"CAIRN_CATALOG": str(catalog)})
    assert run.returncode in (1, 2), run.stdout + run.stderr
    text = run.stdout + run.stderr
    assert "my-table" in text and "breast-cancer" not in text


def test_release_honours_cairn_release_spec(tmp_path: Path) -> None:
    """The spec named by the variable is the one loaded: a broken one is reported by its path (exit 2)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\nmodel: my-own-model\nrelease: '2.0.{sequence}'\nno_such_field: 1\n")
    run = cairn("release", "--home", tmp_path / "home", env={"CAIRN_RELEASE_SPEC": str(spec)})
    assert run.returncode == 2, run.stdout + run.stderr
    assert str(spec) in run.stderr and "digits-classifier" not in run.stdout + run.stderr
    flagged = cairn("release", "--home", tmp_path / "home", "--spec", spec, env={"CAIRN_RELEASE_SPEC": "/nonexistent"})
    assert flagged.returncode == 2 and str(spec) in flagged.stderr  # the flag wins over the environment


def test_a_revocation_follows_the_release_to_a_second_store(tmp_path: Path, release: dict[str, Path],
                                                             s3_bucket: S3Bucket) -> None:  # noqa: F811
    """Revoked in the publisher's store, a release can be neither published to another store nor pulled or
    audited from a store it reached before the revocation (issue 27): the publisher's revocation list
    ($CAIRN_REVOCATIONS, default the configured store) is consulted wherever the release is."""
    home, policy = release["home"], release["policy"]
    first, second, third = (f"{s3_bucket.url}/{name}" for name in ("publisher", "mirror", "late-mirror"))
    common = ["--home", home, "--release-policy", policy]
    assert cairn("publish", release["bundle"], "--store", first, *common).returncode == 0
    assert cairn("publish", release["bundle"], "--store", second, *common).returncode == 0  # before the revocation
    revoked = cairn("revoke", f"{MODEL}@1.0.0", "--reason", "gate threshold misconfigured", "--store", first,
                    "--home", home, "--key", release["private"])
    assert revoked.returncode == 0, revoked.stderr
    publisher = {"CAIRN_REVOCATIONS": first}
    # publishing elsewhere after the revocation is refused, with the reason
    late = cairn("publish", release["bundle"], "--store", third, *common, env=publisher)
    assert late.returncode == 1 and "gate threshold misconfigured" in late.stdout + late.stderr
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name, Prefix="late-mirror/releases/")
    assert listed.get("KeyCount", 0) == 0  # no publication record was written there
    # the mirror it reached before: pull and audit refuse it
    pulled = cairn("pull", f"{MODEL}@1.0.0", "--dest", tmp_path / "from-mirror", "--store", second, *common,
                   "--no-progress", env=publisher)
    assert pulled.returncode == 1 and "gate threshold misconfigured" in pulled.stdout + pulled.stderr
    assert not (tmp_path / "from-mirror").exists()
    audited = cairn("audit", release["bundle"], "--release-policy", policy, "--store", second, env=publisher)
    assert audited.returncode == 1 and f"revocation source(s) {first}" in audited.stdout
    # without the publisher's list the mirror alone knows nothing: that is what the setting is for
    alone = cairn("pull", f"{MODEL}@1.0.0", "--dest", tmp_path / "alone", "--store", second, *common,
                  "--no-progress", env={"CAIRN_REVOCATIONS": "none"})
    assert alone.returncode == 0, alone.stderr
