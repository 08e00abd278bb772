"""Schemas of the files users write: catalog, trust (and release) policy, release spec, expectation suite, project."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from integrity.settings import VARIABLES

SourceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- catalog -----------------------------------------------------------------------------------------------


class CatalogSchedule(Strict):
    """A source's ``schedule:`` as a mapping."""

    cron: str = Field(description="five-field cron expression, e.g. '0 3 * * *'")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in")


class CatalogSource(Strict):
    """One third-party artifact (``sources.<name>``)."""

    kind: Literal["dataset", "model"]
    uri: str = Field(description="folder or file: a path relative to the Cairn home, file://, s3:// or https://")
    format: str = Field(description="dataset: a registered dataset format (csv, tsv, jsonl, parquet, npy, npz, "
                                    "image-folder, dicom); model: pytorch, "
                                    "safetensors, onnx, numpy or auto")
    license: str
    origin: str
    signature: str | None = Field(None, description="where the signature bundle is (default beside the artifact)")
    policy_source: str | None = Field(None, description="trust-policy entry (default: the source name)")
    suite: str | None = Field(None, description="expectation suite (JSON) for a dataset")
    scan_profile: str | None = None
    phi: Literal["reject", "flag"] | None = None
    baseline: Digest | None = None
    description: str | None = None
    probes: str | None = Field(None, description="model: the image dataset whose samples probe its backdoor scan")
    extra_files: list[str] | None = Field(None, description="dataset: reviewed shell patterns of files the format "
                                                        "does not read, carried unread and listed as such")
    schedule: str | CatalogSchedule | None = Field(
        None, description="when Dagster ingests and screens the source on its own: a five-field cron string "
                          "(UTC) or {cron, timezone}")


class CatalogFile(Strict):
    """A source catalog (``integrity/data/catalogs/demo.yaml`` is an example)."""

    version: Literal[1]
    policy: str = Field(description="the trust policy, relative to the catalog root")
    sources: dict[SourceName, CatalogSource] = {}
    description: str | None = None
    root: str | None = None
    suites: str | None = None


# -- trust policy ------------------------------------------------------------------------------------------


class KeyRule(Strict):
    fingerprint: Digest
    public_key: str


class SigstoreRule(Strict):
    identity: str
    issuer: str
    trusted_root: str | None = Field(None, description="production, staging or a trusted-root JSON file")


class CertificateRule(Strict):
    ca: str
    identity: str
    tsa: str | None = None


class KeySigner(Strict):
    key: KeyRule


class SigstoreSigner(Strict):
    sigstore: SigstoreRule


class CertificateSigner(Strict):
    certificate: CertificateRule


class PolicySource(Strict):
    signers: list[KeySigner | SigstoreSigner | CertificateSigner] = []
    digests: list[Digest] = []
    allow_unscanned: bool | None = Field(None, description="a model no backdoor scan applies to may be trained on")
    license: str | None = None
    origin: str | None = None
    description: str | None = None


class TrustPolicyFile(Strict):
    """Who may sign each source (a release policy is the same format, keyed by model name)."""

    version: Annotated[int, Field(ge=1)]
    sources: dict[str, PolicySource]
    description: str | None = None


# -- release spec ------------------------------------------------------------------------------------------

InputName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}(/[a-z][a-z0-9_-]{0,30})?$")]
Fraction = Annotated[float, Field(ge=0, le=1)]


class TrainingSection(Strict):
    model_config = ConfigDict(extra="forbid", strict=False)

    seed: int | None = None
    image_size: Annotated[int, Field(ge=1)] | None = None
    epochs: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] | None = None
    learning_rate: Annotated[float, Field(gt=0, lt=10)] | None = None
    weight_decay: Annotated[float, Field(ge=0)] | None = None
    optimizer: Literal["adam", "sgd"] | None = None
    holdout_fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    freeze_blocks: Annotated[int, Field(ge=0)] | None = None
    batchnorm_momentum: Annotated[float, Field(ge=0, le=1)] | None = None
    max_steps: Annotated[int, Field(ge=1)] | None = None
    hidden_units: Annotated[int, Field(ge=1)] = 64


class GateSection(Strict):
    model_config = ConfigDict(extra="forbid", strict=False)

    min_clean_accuracy: Fraction | None = None
    max_attack_success: Fraction | None = None
    epsilons: list[Annotated[float, Field(gt=0, lt=1)]] | None = None
    pgd_steps: Annotated[int, Field(ge=1)] | None = None
    adversarial_samples: Annotated[int, Field(ge=1)] | None = None
    min_robust_accuracy: Fraction | None = None
    triggers: list[str] | None = None


class CardSection(Strict):
    intended_use: str | None = None
    limitations: list[Annotated[str, Field(min_length=1)]] | None = None


class ReleaseSpecFile(Strict):
    """What to fine-tune from which attested inputs, and the release gate it must pass."""

    version: Literal[1]
    model: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$")]
    release: str = Field(description="the version, e.g. 1.0.0 or 1.0.{sequence}")
    base_model: InputName | None = Field(None, description="the foundation model fine-tuned (image recipes); "
                                                          "omitted for recipes that train from scratch (tabular-mlp)")
    datasets: Annotated[list[InputName], Field(min_length=1)]
    training: TrainingSection | None = None
    gate: GateSection | None = None
    architecture: str | None = None
    card: CardSection | None = None
    license: str | None = None
    description: str | None = None


# -- expectation suite -------------------------------------------------------------------------------------


class SuiteColumn(Strict):
    model_config = ConfigDict(extra="forbid", strict=False)

    type: Literal["float", "int", "str"] = "str"
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    values: list[Any] | None = None
    regex: str | None = Field(None, description="every value matches this regular expression")
    unique: bool = Field(False, description="no value occurs twice")
    min_length: int | None = Field(None, ge=0, description="shortest value (characters)")
    max_length: int | None = Field(None, ge=0, description="longest value (characters)")
    thousands: Literal[",", ".", " ", "'", "_"] | None = Field(
        None, description="numbers may group thousands with this separator ('1,234.5'); a number type")


class SuiteExpectation(Strict):
    """A native Great Expectations expectation, run as it is."""

    model_config = ConfigDict(extra="forbid", strict=False)

    type: str = Field(description="a GX 1.x expectation type, e.g. expect_column_values_to_match_regex")
    kwargs: dict[str, Any] = {}
    meta: dict[str, Any] = {}


class SuiteLabel(Strict):
    model_config = ConfigDict(extra="forbid", strict=False)

    column: str | None = None
    values: list[Any] | None = None
    max_balance_drift: Fraction | None = None
    baseline: dict[str, Fraction] | None = Field(
        None, description="each label's share, compared against when no earlier attested version exists")


class SuiteRowCount(Strict):
    min: int | None = None
    max: int | None = None


class SuiteImages(Strict):
    model_config = ConfigDict(extra="forbid", strict=False)

    range: list[float] | None = Field(None, min_length=2, max_length=2,
                                      description="[low, high]: the range pixel values are stored in (scaled from it)")
    channels: list[Literal[1, 3, 4]] | None = None


class ExpectationSuiteFile(Strict):
    """A dataset's expectations (run with Great Expectations 1.x)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    name: str
    description: str | None = None
    columns: dict[str, SuiteColumn] = {}
    exact_columns: bool = True
    label: SuiteLabel | None = None
    expect_no_duplicate_rows: bool = False
    row_count: SuiteRowCount | None = None
    images: SuiteImages | None = None
    expectations: list[SuiteExpectation] = Field(
        [], description="native GX expectations, run beside the shorthand (a native GX suite file is read too)")


# -- project file ------------------------------------------------------------------------------------------

ProjectFile = create_model(  # type: ignore[call-overload]
    "ProjectFile",
    __config__=ConfigDict(extra="forbid"),
    __doc__="``cairn.yaml``: settings for every command run in this folder (flags and environment win).",
    **{v.key: (str | int | float | None, Field(None, description=f"{v.help} (${v.env}; default {v.default})"))
       for v in VARIABLES},
)
