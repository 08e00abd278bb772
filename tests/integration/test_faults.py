"""Issue 12, fault suite (short run; the long one is ``python -m benchmarks.robustness``): S3 requests of
publish and pull broken one at a time through a loopback proxy in front of moto, and publishes and ingestions
killed with SIGKILL. Afterwards nothing partial is visible, a rerun heals, and the ledger and the store verify."""

import pytest

from benchmarks.robustness.faults import FAULTS, World, ingest_kill_trials, kill_trials, new_world, s3_trials


@pytest.fixture(scope="module")
def world() -> World:
    made = new_world()
    yield made
    made.close()


def test_s3_faults_on_publish_and_pull_leave_nothing_partial(world: World) -> None:
    trials = s3_trials(world, limit=10, seed=3)
    assert len(trials) == 10 and sum(t.injected for t in trials) >= 8
    problems = [(t.operation, t.fault, t.at, t.problems) for t in trials if t.problems or t.partial
                or not t.healed or not t.verified]
    assert not problems, problems
    assert {t.fault for t in trials} <= set(FAULTS)


def test_kill_9_during_publish_leaves_a_consistent_store(world: World) -> None:
    trials = kill_trials(world, 5, seed=4)
    problems = [(t.at, t.problems) for t in trials if t.problems or t.partial or not t.healed or not t.verified]
    assert not problems, problems


def test_kill_9_during_ingestion_leaves_nothing_half_attested(world: World) -> None:
    trials = ingest_kill_trials(world, 1, seed=5)
    problems = [(t.at, t.problems) for t in trials if t.problems or t.partial or not t.healed or not t.verified]
    assert not problems, problems
