"""Issue 12: every parser that sees untrusted bytes, fuzzed briefly in CI (Hypothesis), plus every crash or
hang the fuzzers ever found, replayed. The long, coverage-guided run is ``python -m benchmarks.robustness``."""

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.robustness.fuzz import mutate
from benchmarks.robustness.seeds import load
from benchmarks.robustness.targets import TARGETS, call

REGRESSIONS = Path(__file__).with_name("fuzz_regressions")
FOUND = sorted((p.parent.name, p) for p in REGRESSIONS.glob("*/*") if p.is_file())


@pytest.mark.parametrize(("target", "path"), FOUND, ids=[f"{t}/{p.name}" for t, p in FOUND])
def test_inputs_that_once_crashed_or_hung_are_refused_cleanly(target: str, path: Path) -> None:
    call(TARGETS[target], path.read_bytes())


def test_every_target_has_seeds() -> None:
    assert FOUND, "the regression corpus is committed"
    for name in TARGETS:
        assert load(name), f"no committed seeds for {name}"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_fuzz_run(name: str) -> None:
    seeds = load(name)

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=2048),
                     st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(seeds)).map(
                         lambda pair: mutate(random.Random(pair[0]), pair[1], seeds))))
    def run(data: bytes) -> None:
        call(TARGETS[name], data)

    run()
