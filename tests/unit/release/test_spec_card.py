"""The model card's intended use and limitations come from the release spec."""

import pytest

from integrity.release.spec import ReleaseSpecError, parse_release_spec

BASE = b"version: 1\nmodel: m\nrelease: '1'\nbase_model: b\ndatasets: [d]\n"


def test_the_card_is_read_from_the_spec() -> None:
    spec = parse_release_spec(BASE + b"card:\n  intended_use: triage aid\n  limitations: [adults only, CT only]\n")
    assert spec.card.intended_use == "triage aid" and spec.card.limitations == ("adults only", "CT only")
    assert parse_release_spec(BASE).card.limitations == ()


@pytest.mark.parametrize("card", [b"card: [a]\n", b"card: {colour: red}\n", b"card: {limitations: [1]}\n",
                                  b"card: {limitations: ['']}\n"])
def test_a_bad_card_is_a_spec_error(card: bytes) -> None:
    with pytest.raises(ReleaseSpecError, match="card"):
        parse_release_spec(BASE + card)
