"""Recipes: how a release was staged, so that a later run can stage it again side by side.

Given (``StagingOptions.recipe``): ``{"image": str, "variables": {...}}``, usually what an earlier
run recorded. The release is then rendered from *this* run's manifests with the recipe's image in
place of ``staging.kubernetes.image`` and its variables over ``staging.kubernetes.variables``.

Recorded (``StagedTarget.recipe``, kept in result.json and stored baselines)::

    {"image": "<rendered image, or None>", "variables": {...the variables used...},
     "manifests_digest": "sha256:<hex of the raw manifest files' bytes, sorted by path>"}

A recipe that cannot work (no image, an image no container uses, an image that cannot be pulled)
is a :class:`~perfgate.errors.StagingError`: the caller falls back to the stored baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from perfgate.errors import StagingError
from perfgate.models import KubernetesSpec
from perfgate.staging.manifests import RESERVED_VARIABLES, RenderedDoc

__all__ = ["Recipe", "parse_recipe", "recorded_recipe", "uses_image", "with_recipe"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """A previous release to stage instead of the scenario as written."""

    image: str  # rendered: replaces staging.kubernetes.image
    variables: dict[str, Any]  # over staging.kubernetes.variables
    manifests_digest: str | None = None  # of the manifests it was recorded with, if known


def parse_recipe(raw: Mapping[str, Any] | None, release: str) -> Recipe | None:
    """The recipe in ``StagingOptions.recipe``, checked; None stages the scenario as written."""
    if raw is None:
        return None
    where = f"cannot stage release {release} from its recipe"
    if not isinstance(raw, Mapping):
        raise StagingError(f"{where}: expected a mapping, got {type(raw).__name__}")
    image = raw.get("image")
    if not isinstance(image, str) or not image.strip():
        raise StagingError(
            f"{where}: it names no image (was staging.kubernetes.image set when it was recorded?)"
        )
    if any(c.isspace() for c in image.strip()):
        raise StagingError(f"{where}: image {image.strip()!r} is not an image reference")
    variables = raw.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise StagingError(
            f"{where}: variables: expected a mapping, got {type(variables).__name__}"
        )
    clash = sorted(set(map(str, variables)) & set(RESERVED_VARIABLES))
    if clash:
        raise StagingError(f"{where}: variables: {clash[0]!r} is a name perfgate sets itself")
    digest = raw.get("manifests_digest")
    return Recipe(
        image=image.strip(),
        variables={str(k): v for k, v in variables.items()},
        manifests_digest=digest if isinstance(digest, str) else None,
    )


def with_recipe(spec: KubernetesSpec, recipe: Recipe | None) -> KubernetesSpec:
    """The scenario's kubernetes spec with the recipe's variables over its own."""
    if recipe is None:
        return spec
    return dataclasses.replace(spec, variables={**spec.variables, **recipe.variables})


def uses_image(docs: Sequence[RenderedDoc], image: str) -> bool:
    """Whether any container (or other ``image`` field) of the rendered objects is ``image``.

    A recipe whose image the manifests never use would stage the candidate a second time and
    compare it with itself.
    """
    return any(value == image for doc in docs for value in _image_fields(doc.obj))


def _image_fields(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "image":
                yield item
            else:
                yield from _image_fields(item)
    elif isinstance(value, list):
        for item in value:
            yield from _image_fields(item)


def recorded_recipe(image: str | None, spec: KubernetesSpec, digest: str) -> dict[str, Any]:
    """What ``StagedTarget.recipe`` records for a target staged with ``image`` and ``spec``."""
    return {"image": image, "variables": dict(spec.variables), "manifests_digest": digest}
