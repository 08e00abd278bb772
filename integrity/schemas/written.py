"""Schemas of the files Cairn writes: the release index and the in-toto records it signs and logs."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class IndexFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: Hex64
    size: Annotated[int, Field(ge=0)]


class ReleaseIndexFile(BaseModel):
    """``release.json``: every file of a release bundle with its digest, the inputs and the gates."""

    model_config = ConfigDict(extra="forbid")

    schema_: Literal["https://cairn.dev/release/v1"] = Field(alias="schema")
    model: str
    version: str
    created: str
    sequence: Annotated[int, Field(ge=1)]
    files: dict[str, IndexFile]
    model_digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    inputs: list[dict[str, Any]]
    policy_digest: str | None = None
    catalog_digest: str | None = None
    gates: dict[str, dict[str, Any]]
    signer: dict[str, Any]
    build: dict[str, Any] | None = None


class Subject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    digest: dict[str, str]


class RecordFile(BaseModel):
    """A record Cairn signs: an in-toto Statement v1 (verification, validation, ingestion, scan, training...)."""

    model_config = ConfigDict(extra="forbid")

    type_: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: list[Subject]
    predicateType: str
    predicate: dict[str, Any]


class FlaggedSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: Annotated[int, Field(ge=0, description="position in the dataset's sample order, 0-based")]
    label: str = Field(description="the sample's label as published")
    score: float = Field(description="poisoning score (robust z; the policy flags at flag_threshold)")
    reason: str | None = Field(None, description="why the sample is flagged, where a rule says more than its score "
                                                 "(a table's extreme value: its column, value and robust bounds)")


class ScreenReportFile(BaseModel):
    """``cairn screen --json``: the poisoning screen's verdict on one dataset, with every flagged sample."""

    model_config = ConfigDict(extra="forbid")

    schema_: Literal["https://cairn.dev/screen/v1"] = Field(alias="schema")
    artifact: str
    kind: Literal["image", "tabular"]
    passed: bool
    verdict: Literal["passed", "quarantined"]
    reason: str
    samples: Annotated[int, Field(ge=0)]
    flagged_count: Annotated[int, Field(ge=0)]
    classes: list[str]
    backdoor_classes: list[str]
    model: dict[str, Any] | None = Field(description="the foundation model's path and digest (images), or null")
    policy: dict[str, Any]
    read: dict[str, Any] = Field(description="how the samples were read (layout, pixel range, feature columns)")
    per_class: dict[str, dict[str, int]]
    flagged: list[FlaggedSample]
    scores: list[float] | None = Field(None, description="every sample's score in sample order (--all-scores)")
    device: str
    seconds: float


class ScreenError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="the error's kind: usage, unreadable, ... or internal (a fault in Cairn)")
    type: str = Field(description="the error's class")
    message: str
    artifact: str | None = Field(description="the input that caused it")
    advice: str = Field(description="what to do")


class ScreenErrorFile(BaseModel):
    """``cairn screen --json`` when the screen could not judge the dataset (exit 2): no verdict on it."""

    model_config = ConfigDict(extra="forbid")

    schema_: Literal["https://cairn.dev/screen/v1"] = Field(alias="schema")
    artifact: str | None
    passed: Literal[False]
    verdict: Literal["error"]
    error: ScreenError


class ScreenReport(RootModel[Annotated[ScreenReportFile | ScreenErrorFile, Field(discriminator="verdict")]]):
    """``cairn screen --json``: a verdict on the dataset (passed, quarantined) or why there is none (error)."""
