"""Training recipes by architecture: what trains a release spec's model, and what gates it.

A recipe is a pair of functions, ``train(spec, inputs, work_dir, run_id=, store=, log=) -> TrainingRun``
and ``evaluate(run, policy, triggers=, store=, log=) -> GateResult``, both ending in the shared
training and evaluation records, so provenance, the ML-BOM, the bundle and the audit are the same
for every recipe. Registered recipes:

* ``image-classification``: fine-tune a registered image backbone (``efficientnet-lite0`` ..
  ``-lite4``; :func:`integrity.release.model.register_architecture` adds more) on image datasets;
  needs a ``base_model``.
* ``tabular-classification`` (``architecture: tabular-mlp``): an MLP trained from scratch on tables.

Adding a recipe (text, regression, ...) is one module and one :func:`register_recipe` call.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from integrity.release.spec import ReleaseSpec, ReleaseSpecError

if TYPE_CHECKING:
    from integrity.release.evaluation import GateResult
    from integrity.release.training import TrainingRun


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str  # the dataset kind it trains on: "image" or "tabular"
    needs_base_model: bool
    train: Callable[..., "TrainingRun"]
    evaluate: Callable[..., "GateResult"]


_RECIPES: dict[str, Recipe] = {}


def register_recipe(architecture: str, recipe: Recipe) -> None:
    """Let release specs name ``architecture: NAME`` and have ``recipe`` train and gate it."""
    _RECIPES[architecture] = recipe


def _image() -> Recipe:
    from integrity.release.evaluation import evaluate
    from integrity.release.training import fine_tune

    return Recipe("image-classification", "image", True, fine_tune, evaluate)


def recipe_for(spec: ReleaseSpec | str) -> Recipe:
    """The recipe of a spec's (or a model config's) architecture; a spec that does not fit it is refused."""
    from integrity.release.model import architectures

    architecture = spec if isinstance(spec, str) else spec.architecture
    if architecture in _RECIPES:
        recipe = _RECIPES[architecture]
    elif architecture in architectures():
        recipe = _image()
    else:
        known = sorted({*_RECIPES, *architectures()})
        raise ReleaseSpecError(f"architecture {architecture!r} has no training recipe (known: {', '.join(known)})",
                               artifact=None if isinstance(spec, str) else spec.path)
    if isinstance(spec, ReleaseSpec):
        if recipe.needs_base_model and spec.base_model is None:
            raise ReleaseSpecError(f"{recipe.name} ({architecture}) fine-tunes a base model: name base_model",
                                   artifact=spec.path)
        if not recipe.needs_base_model and spec.base_model is not None:
            raise ReleaseSpecError(f"{recipe.name} ({architecture}) trains from scratch: remove base_model",
                                   artifact=spec.path)
    return recipe


def train(spec: ReleaseSpec, inputs: Any, work_dir: Any, **options: Any) -> "TrainingRun":
    return recipe_for(spec).train(spec, inputs, work_dir, **options)


def evaluate(run: "TrainingRun", policy: Any, **options: Any) -> "GateResult":
    architecture = str((run.predicate.get("spec") or {}).get("architecture") or "efficientnet-lite0")
    return recipe_for(architecture).evaluate(run, policy, **options)


def _tabular() -> None:
    from integrity.release.tabular import ARCHITECTURE, evaluate_tabular, train_tabular

    register_recipe(ARCHITECTURE, Recipe("tabular-classification", "tabular", False, train_tabular, evaluate_tabular))


_tabular()
