"""The vault's configuration file, ``vault.json``, in the vault directory.

It holds no secret: identifiers, where the keys live (a key URI), which store to use, and tuning.
It is written last when a vault is created, so its presence means the vault is complete.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faceseal.encoders.dlib_resnet import check_encoder_settings
from faceseal.errors import InvalidInput, NotFound
from faceseal.keys.datakeys import DEFAULT_MAX_ENCRYPTIONS
from faceseal.keys.files import write_private_atomic
from faceseal.matching.models import BUILTIN_MODELS, ModelSpec
from faceseal.vault.budgets import (
    DEFAULT_PER_PRINCIPAL,
    DEFAULT_PER_SUBJECT,
    DEFAULT_WINDOW_SECONDS,
    BudgetLimits,
)

CONFIG_FILE = "vault.json"
FORMAT = "faceseal-vault/1"
DEFAULT_TENANT = "default"
#: The loosest threshold an extra model may declare, per metric. Cosine distance 1 means
#: orthogonal encodings; Euclidean 1.5 is far beyond any published tolerance for unit-scale face
#: encodings (dlib: 0.6). Beyond these a "match" says nothing.
THRESHOLD_CEILINGS: dict[str, float] = {"cosine": 1.0, "euclidean": 1.5}


@dataclass
class VaultConfig:
    """Settings of one vault (no secrets)."""

    vault_id: str
    created_at: str
    key_uri: str
    key_store_dir: str
    store_url: str = "sqlite:templates.db"
    max_encryptions_per_key: int = DEFAULT_MAX_ENCRYPTIONS
    #: Encoder models beyond the built-in ones, e.g. a 512-d model with its own threshold.
    extra_models: list[dict[str, Any]] = field(default_factory=list)
    #: Per-model threshold overrides.
    thresholds: dict[str, float] = field(default_factory=dict)
    #: Checkpoint the audit log's head (in the key directory) after this many events written by
    #: one process, or when the last checkpoint is this many seconds old, and at close.
    audit_checkpoint_every: int = 16
    audit_checkpoint_seconds: float = 1.0
    #: Query budgets (docs/threat-model.md): verify/identify queries per principal and per
    #: subject within a sliding window of this many seconds.
    budget_window_seconds: float = DEFAULT_WINDOW_SECONDS
    budget_per_principal: int = DEFAULT_PER_PRINCIPAL
    budget_per_subject: int = DEFAULT_PER_SUBJECT
    #: The photo encoder's settings (docs/cli.md#encoder-settings). ``landmarks`` and
    #: ``num_jitters`` change the encoding itself, so every template and every probe of a vault
    #: is encoded with the same ones (an encoder built otherwise is refused); ``upsample`` only
    #: changes which faces are found.
    encoder_upsample: int = 1
    encoder_num_jitters: int = 1
    encoder_landmarks: str = "5"

    def encoder_settings(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~faceseal.encoders.DlibResNetEncoder` this vault's
        photos are encoded with (checked: a malformed file is refused here)."""
        settings: dict[str, Any] = {"upsample": self.encoder_upsample,
                                    "num_jitters": self.encoder_num_jitters,
                                    "landmarks": self.encoder_landmarks}
        try:
            check_encoder_settings(**settings)
        except InvalidInput as exc:
            raise InvalidInput(f"{CONFIG_FILE}: {exc}") from None
        return settings

    def set_encoder(self, settings: Mapping[str, Any]) -> None:
        """Set the encoder's settings (any of ``upsample``, ``num_jitters``, ``landmarks``; the
        others keep their defaults), refusing unknown names and out-of-bound values."""
        chosen = {"upsample": 1, "num_jitters": 1, "landmarks": "5", **settings}
        unknown = set(chosen) - {"upsample", "num_jitters", "landmarks"}
        if unknown:
            raise InvalidInput(f"unknown encoder setting(s): {', '.join(sorted(unknown))} "
                               "(known: upsample, num_jitters, landmarks)")
        check_encoder_settings(**chosen)
        self.encoder_upsample = chosen["upsample"]
        self.encoder_num_jitters = chosen["num_jitters"]
        self.encoder_landmarks = chosen["landmarks"]

    def budgets(self) -> BudgetLimits:
        return BudgetLimits(self.budget_window_seconds, self.budget_per_principal,
                            self.budget_per_subject)

    @property
    def keyset_id(self) -> bytes:
        """The 128-bit identifier bound into every record and wrapped key of this vault."""
        return bytes.fromhex(self.vault_id)

    def models(self) -> dict[str, ModelSpec]:
        """The models this vault knows, with their thresholds. Thresholds are bounded per model:
        an extra model's by its metric (:data:`THRESHOLD_CEILINGS`), an override by the model's
        own threshold -- the configuration may make a model stricter, never looser."""
        registry = dict(BUILTIN_MODELS)
        for spec in self.extra_models:
            try:
                model = ModelSpec(**spec)
            except TypeError as exc:
                raise InvalidInput(f"{CONFIG_FILE}: an extra model is malformed: {exc}") from None
            ceiling = THRESHOLD_CEILINGS[model.metric]
            if model.model_id in BUILTIN_MODELS or not model.threshold <= ceiling:
                raise InvalidInput(
                    f"{CONFIG_FILE}: model {model.model_id} must be new and its threshold at "
                    f"most {ceiling} ({model.metric})")
            registry[model.model_id] = model
        for model_id, threshold in self.thresholds.items():
            base = registry.get(model_id)
            if base is None:
                raise InvalidInput(f"{CONFIG_FILE}: a threshold for unknown model {model_id!r}")
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
                    or not 0 < float(threshold) <= base.ceiling:
                raise InvalidInput(
                    f"{CONFIG_FILE}: the threshold of {model_id} must be within "
                    f"(0, {base.ceiling}]: the configuration may make a model stricter, "
                    "never looser")
            registry[model_id] = ModelSpec(base.model_id, base.dimension, base.metric,
                                           float(threshold), base.description,
                                           base.max_threshold)
        return registry

    def save(self, home: Path) -> None:
        document = {"format": FORMAT, **asdict(self)}
        write_private_atomic(home / CONFIG_FILE, json.dumps(document, indent=2).encode())

    @classmethod
    def load(cls, home: Path) -> VaultConfig:
        path = home / CONFIG_FILE
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(
                f"no vault at {home} (run `faceseal init`, or pass --vault / set FACESEAL_HOME)"
            ) from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{CONFIG_FILE} in {home} is unreadable: {exc}") from None
        if document.pop("format", None) != FORMAT:
            raise InvalidInput(f"{CONFIG_FILE} in {home} is not a faceseal vault configuration")
        try:
            return cls(**document)
        except TypeError as exc:
            raise InvalidInput(f"{CONFIG_FILE} in {home} has unexpected settings: {exc}") from None
