"""Schemas of the files Cairn writes: the release index and the in-toto records it signs and logs."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
