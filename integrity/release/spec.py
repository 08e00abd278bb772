"""The release spec: which model to build, from which attested inputs, how, and what it must pass.

A small YAML file per released model, reviewed like code; its digest goes into the provenance
as an external parameter. Example (``integrity/data/releases/demo.yaml``)::

    version: 1
    model: digits-classifier
    release: "1.0.{sequence}"        # {sequence}: one more than the model's last release
    license: Apache-2.0
    base_model: efficientnet-lite0   # catalog source (its attested safetensors conversion)
    datasets: [digits]               # catalog sources; "digits/screened" names a screened stage
    training: {seed: 1234, epochs: 2, batch_size: 64, learning_rate: 0.001, image_size: 32}
    gate: {min_clean_accuracy: 0.9, max_attack_success: 0.2, epsilons: [0.03, 0.1]}

Inputs are written ``SOURCE`` (the attested artifact) or ``SOURCE/STAGE`` (a later stage of it,
such as the poisoning screen's ``screened`` output); :func:`integrity.release.training.resolve_input` is
the one place that turns such a name into bytes and records.
"""

import hashlib
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from integrity.errors import UsageError
from integrity.safeio import MAX_CONFIG_BYTES, parse_yaml, read_regular_file

SPEC_VERSIONS = (1,)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_INPUT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}(/[a-z][a-z0-9_-]{0,30})?$")
_TOP_FIELDS = {"version", "model", "release", "description", "license", "base_model", "datasets", "training",
               "gate", "architecture", "card"}


class ReleaseSpecError(UsageError):
    """The release spec cannot be used as written; nothing was trained."""

    kind = "release-spec"
    advice = "Fix the release spec; its format is described in integrity/release/spec.py."


@dataclass(frozen=True)
class InputRef:
    """A training input named in the spec: a catalog source, optionally a later stage of it."""

    ref: str
    role: str  # "base-model" or "training-data"

    @property
    def source(self) -> str:
        return self.ref.split("/", 1)[0]

    @property
    def stage(self) -> str:
        """``attested`` for a plain source name, else the stage after the slash."""
        return self.ref.split("/", 1)[1] if "/" in self.ref else "attested"


@dataclass(frozen=True)
class TrainingParams:
    """Hyperparameters; every one is recorded in the training record and the provenance."""

    seed: int = 1234
    image_size: int = 32
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 0.001
    weight_decay: float = 0.0
    optimizer: str = "adam"
    holdout_fraction: float = 0.2
    #: Stem and the first N blocks stay as pretrained (0 = fine-tune the whole backbone).
    freeze_blocks: int = 0
    batchnorm_momentum: float = 0.1
    #: Width of the hidden layers of the tabular recipe's MLP.
    hidden_units: int = 64
    #: Stop after this many optimizer steps (tests use a handful); None = all epochs.
    max_steps: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class GatePolicy:
    """What a model must show before it is released."""

    min_clean_accuracy: float = 0.9
    #: Highest allowed attack success rate of any trigger the scans reversed or flagged.
    max_attack_success: float = 0.2
    #: FGSM and PGD perturbation budgets (L-infinity, pixel scale 0..1); reported.
    epsilons: tuple[float, ...] = (0.03, 0.1)
    pgd_steps: int = 5
    #: Held-out images attacked (the most expensive part of the gate).
    adversarial_samples: int = 128
    #: Optional floor for PGD accuracy at the largest epsilon; None = report only.
    min_robust_accuracy: float | None = None
    #: Trigger files (JSON, see integrity.release.evaluation.Trigger) to test besides any the scans produce.
    triggers: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["epsilons"] = list(self.epsilons)
        data["triggers"] = list(self.triggers)
        return data


@dataclass(frozen=True)
class ModelCard:
    """What the model card (the ML-BOM's ``modelCard``) says about use: from the spec, never from the code."""

    intended_use: str = ""
    limitations: tuple[str, ...] = ()


def _card(value: Any, path: Path | None) -> ModelCard:
    if value is None:
        return ModelCard()
    if not isinstance(value, dict):
        raise ReleaseSpecError("card must be a mapping (intended_use, limitations)", artifact=path)
    unknown = sorted(str(k) for k in set(value) - {"intended_use", "limitations"})
    if unknown:
        raise ReleaseSpecError(f"card: unknown field(s) {', '.join(unknown)} (allowed: intended_use, limitations)",
                               artifact=path)
    intended = value.get("intended_use", "")
    limitations = value.get("limitations", [])
    if not isinstance(intended, str) or not isinstance(limitations, list) or not all(
            isinstance(item, str) and item.strip() for item in limitations):
        raise ReleaseSpecError("card: intended_use is text and limitations a list of non-empty texts", artifact=path)
    return ModelCard(intended.strip(), tuple(item.strip() for item in limitations))


@dataclass(frozen=True)
class ReleaseSpec:
    model: str
    release: str
    base_model: InputRef | None  # None: the recipe trains from scratch (tables)
    datasets: tuple[InputRef, ...]
    training: TrainingParams = field(default_factory=TrainingParams)
    gate: GatePolicy = field(default_factory=GatePolicy)
    license: str = "NOASSERTION"
    architecture: str = "efficientnet-lite0"
    description: str = ""
    card: ModelCard = field(default_factory=ModelCard)
    path: Path | None = None
    digest: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Settings changed after loading (``with_overrides``); recorded beside the file's digest.
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[InputRef, ...]:
        return (self.base_model, *self.datasets) if self.base_model is not None else self.datasets

    def version_for(self, sequence: int) -> str:
        """The release version: the spec's ``release`` with ``{sequence}`` filled in."""
        return self.release.replace("{sequence}", str(sequence))

    def with_overrides(self, *, training: dict[str, Any] | None = None, gate: dict[str, Any] | None = None
                       ) -> "ReleaseSpec":
        """A copy with some hyperparameters or gate settings changed (tests, quick runs); recorded as such."""
        spec = self
        overrides = {k: dict(v) for k, v in self.overrides.items()}
        if training:
            spec = replace(spec, training=_params(TrainingParams, {**spec.training.as_dict(), **training},
                                                  "training", spec.path))
            overrides.setdefault("training", {}).update(training)
        if gate:
            spec = replace(spec, gate=_params(GatePolicy, {**spec.gate.as_dict(), **gate}, "gate", spec.path))
            overrides.setdefault("gate", {}).update(gate)
        return replace(spec, overrides=overrides)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "digest": self.digest, "model": self.model,
                "release": self.release, "base_model": self.base_model.ref if self.base_model else None,
                "datasets": [d.ref for d in self.datasets], "training": self.training.as_dict(),
                "gate": self.gate.as_dict(), "license": self.license, "architecture": self.architecture,
                "overrides": self.overrides}


def _params(kind: Any, values: Any, where: str, path: Path | None) -> Any:
    if values is None:
        return kind()
    if not isinstance(values, dict):
        raise ReleaseSpecError(f"{where} must be a mapping", artifact=path)
    allowed = {f.name: f for f in fields(kind)}
    unknown = sorted(str(k) for k in set(values) - set(allowed))
    if unknown:
        raise ReleaseSpecError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})",
                               artifact=path)
    defaults = kind()
    converted: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(defaults, name)
        try:
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple):
                    raise TypeError("expected a list")
                converted[name] = tuple(float(v) if name == "epsilons" else str(v) for v in value)
            elif value is None:
                if name not in ("max_steps", "min_robust_accuracy"):
                    raise TypeError("may not be empty")
                converted[name] = None
            elif isinstance(default, bool) or isinstance(value, bool):
                raise TypeError("booleans are not allowed here")
            elif isinstance(default, int) or name == "max_steps":
                if isinstance(value, float) or int(value) != value:
                    raise TypeError("expected an integer")
                converted[name] = int(value)
            elif isinstance(default, float) or name == "min_robust_accuracy":
                converted[name] = float(value)
            else:
                converted[name] = str(value)
        except (TypeError, ValueError) as exc:
            raise ReleaseSpecError(f"{where}.{name}: {exc} (got {value!r})", artifact=path) from exc
    params = kind(**converted)
    _check_ranges(params, where, path)
    return params


def _check_ranges(params: Any, where: str, path: Path | None) -> None:
    def bad(name: str, why: str) -> ReleaseSpecError:
        return ReleaseSpecError(f"{where}.{name}: {why}", artifact=path)

    if isinstance(params, TrainingParams):
        if params.epochs < 1 or params.batch_size < 1 or params.image_size < 8 or params.hidden_units < 1:
            raise bad("epochs/batch_size/image_size", "must be positive (image_size at least 8)")
        if not 0 < params.holdout_fraction < 1:
            raise bad("holdout_fraction", "must be between 0 and 1")
        if params.optimizer not in ("adam", "sgd"):
            raise bad("optimizer", "must be adam or sgd")
        if params.max_steps is not None and params.max_steps < 1:
            raise bad("max_steps", "must be positive")
        if not 0 < params.learning_rate < 10:
            raise bad("learning_rate", "must be positive")
    else:
        assert isinstance(params, GatePolicy)
        for name in ("min_clean_accuracy", "max_attack_success"):
            if not 0 <= getattr(params, name) <= 1:
                raise bad(name, "must be between 0 and 1")
        if any(not 0 < e < 1 for e in params.epsilons):
            raise bad("epsilons", "each must be between 0 and 1 (pixel scale)")
        if params.pgd_steps < 1 or params.adversarial_samples < 1:
            raise bad("pgd_steps/adversarial_samples", "must be positive")


def _input(value: Any, role: str, where: str, path: Path | None) -> InputRef:
    if not isinstance(value, str) or not _INPUT.match(value):
        raise ReleaseSpecError(f"{where}: {value!r} is not a source name or SOURCE/STAGE", artifact=path)
    return InputRef(value, role)


def _parse_release_spec(text: bytes, *, path: Path | None = None) -> ReleaseSpec:
    digest = "sha256:" + hashlib.sha256(text).hexdigest()
    data = parse_yaml(text, artifact=path, error=ReleaseSpecError)
    if not isinstance(data, dict):
        raise ReleaseSpecError("a release spec is a mapping", artifact=path)
    unknown = sorted(str(k) for k in set(data) - _TOP_FIELDS)
    if unknown:
        raise ReleaseSpecError(f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_TOP_FIELDS))})",
                               artifact=path)
    if data.get("version") not in SPEC_VERSIONS:
        raise ReleaseSpecError(f"version must be one of {SPEC_VERSIONS}", artifact=path)
    model = data.get("model")
    if not isinstance(model, str) or not _NAME.match(model):
        raise ReleaseSpecError(f"model {model!r} must be a lowercase name", artifact=path)
    release = str(data.get("release") or "")
    if not re.match(r"^[0-9A-Za-z][0-9A-Za-z.+_{}-]{0,63}$", release) or not re.match(
            r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$", release.replace("{sequence}", "1")):
        raise ReleaseSpecError(f"release {release!r} must be a version such as 1.0.0 or 1.0.{{sequence}}",
                               artifact=path)
    datasets_raw = data.get("datasets")
    if not isinstance(datasets_raw, list) or not datasets_raw:
        raise ReleaseSpecError("datasets must be a non-empty list of sources", artifact=path)
    datasets = tuple(_input(v, "training-data", f"datasets[{i}]", path) for i, v in enumerate(datasets_raw))
    if len({d.ref for d in datasets}) != len(datasets):
        raise ReleaseSpecError("datasets lists a source twice", artifact=path)
    return ReleaseSpec(
        model=model,
        release=release,
        base_model=(_input(data["base_model"], "base-model", "base_model", path)
                    if data.get("base_model") is not None else None),
        datasets=datasets,
        training=_params(TrainingParams, data.get("training"), "training", path),
        gate=_params(GatePolicy, data.get("gate"), "gate", path),
        license=str(data.get("license") or "NOASSERTION"),
        architecture=str(data.get("architecture") or "efficientnet-lite0"),
        description=str(data.get("description") or ""),
        card=_card(data.get("card"), path),
        path=path,
        digest=digest,
        raw=data,
    )

def parse_release_spec(text: bytes, *, path: Path | None = None) -> ReleaseSpec:
    """Strict parse; on failure the error also lists every schema problem of the file (docs/schemas)."""
    try:
        return _parse_release_spec(text, path=path)
    except ReleaseSpecError as error:
        from integrity.schemas import add_problems

        try:
            document = parse_yaml(text)
        except Exception:
            raise error from None
        add_problems(error, "release-spec", document)
        raise


def load_release_spec(path: str | Path) -> ReleaseSpec:
    spec_path = Path(path)
    text = read_regular_file(spec_path, what="release spec", max_bytes=MAX_CONFIG_BYTES, error=ReleaseSpecError)
    return parse_release_spec(text, path=spec_path)
