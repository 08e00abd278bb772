"""One-sentence summaries: what a failed check's description says (the trace stays in the logs)."""

import pytest

from integrity.errors import one_sentence
from integrity.intake.outcomes import StepOutcome, headline


@pytest.mark.parametrize(("text", "expected"), [
    ("work/x/fetched/src: content differs from what was signed (changed: a.csv)",
     "content differs from what was signed (changed: a.csv)."),
    ("already a sentence.", "already a sentence."),
    ("two\nlines\n  here", "two lines here."),
    ("no path: here", "no path: here."),
])
def test_one_sentence(text: str, expected: str) -> None:
    assert one_sentence(text) == expected


def test_long_reasons_are_cut_at_a_word_and_marked() -> None:
    text = "failed: " + "; ".join(f"phi:Field{i}: file{i}.dcm: Field{i} is present" for i in range(40))
    short = one_sentence(text, limit=120)
    assert len(short) <= 120 and short.endswith("…") and "\n" not in short
    assert not short[:-1].endswith(" ")


def test_headline_names_the_source_gate_and_verdict() -> None:
    assert headline("digits", "screen", True, "20/1797 samples flagged") == (
        "digits passed the poisoning screen: 20/1797 samples flagged.")
    assert headline("bc-export", "validate", False, "bc-export: failed: type_drift(area): 3 values") == (
        "bc-export was rejected at validation: type_drift(area): 3 values.")
    outcome = StepOutcome("mirror", "verify", False, "work/mirror/fetched/mirror: content differs", "f1",
                          details={"cause": "content differs from what was signed"})
    assert outcome.headline == "mirror was rejected at signature verification: content differs from what was signed."
