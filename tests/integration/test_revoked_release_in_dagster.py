"""A revocation shows on the released asset in Dagster as soon as it is made (issue 27): the revocation
sensor fails the asset's ``not_revoked`` check with the reason, the time and the authority."""

from pathlib import Path

import dagster as dg
import pytest

from integrity.release.revocation import revoke
from integrity.storage import open_store
from integrity.trust.methods.key import KeySigner
from pipelines.assets.release import NOT_REVOKED_CHECK
from pipelines.resources import CairnResource
from pipelines.sensors import build_revocation_sensor
from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle

KEY = dg.AssetKey(["digits_classifier", "released"])


def test_the_revocation_sensor_fails_the_released_assets_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CAIRN_STORE", "CAIRN_REVOCATIONS", "CAIRN_RELEASE_POLICY", "CAIRN_PROJECT", "CAIRN_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    private, public = make_release_key(home / "keys")
    write_release_policy(home / "release-policy.yaml", "digits-classifier", public)
    bundle = write_test_bundle(home / "releases" / "digits-classifier-1.0.0", private, weights_size=256)
    sensor = build_revocation_sensor([KEY])
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(KEY, metadata={"release": str(bundle)}))

        def evaluate(cursor: str | None = None) -> dg.SensorResult:
            context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                              resources={"cairn": CairnResource(home=str(home))})
            result = sensor(context)
            assert isinstance(result, dg.SensorResult)
            return result

        assert not evaluate().asset_events  # not revoked: nothing to say
        revoke(open_store(home / "store"), KeySigner.from_file(private), "release", "digits-classifier@1.0.0",
               "gate threshold misconfigured")
        result = evaluate()
        checks = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert len(checks) == 1 and checks[0].check_name == NOT_REVOKED_CHECK and not checks[0].passed
        assert checks[0].severity == dg.AssetCheckSeverity.ERROR
        assert "gate threshold misconfigured" in (checks[0].description or "")
        observed = [e for e in result.asset_events if isinstance(e, dg.AssetObservation)]
        assert observed and "REVOKED at" in str(observed[0].metadata["revoked"].value)
        assert not evaluate(result.cursor).asset_events  # reported once


def test_released_assets_carry_the_not_revoked_check() -> None:
    from pipelines.assets.release import load_release_assets
    from pipelines.definitions import defs

    _, assets = load_release_assets()
    released = [a for a in assets if any(k.path[-1] == "released" for k in a.keys)]
    assert released and all(any(c.name == NOT_REVOKED_CHECK for c in a.check_specs) for a in released)
    assert "revocation_sensor" in {s.name for s in (defs.sensors or [])}
