"""Helpers for the answer-policy tests: plausible synthetic encodings and vault budgets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from faceseal.vault import Vault

from .conftest import vault_keys


def plausible_encodings(base: NDArray[np.float64], count: int, *, spread: float = 0.05,
                        seed: int = 0) -> NDArray[np.float64]:
    """``count`` encodings around the real ``base`` ones: dlib-like (norm about 1.4, largest
    coordinate about 0.4) and apart from each other by about 0.8, as different people are."""
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(0, len(base), count)]
    return picks + rng.standard_normal((count, base.shape[1])) * spread


def random_plausible_probes(count: int, *, seed: int = 0) -> NDArray[np.float64]:
    """What an attacker who knows only the model's statistics would send: coordinates drawn
    around zero with dlib's spread (0.12), so every probe passes the plausibility checks."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, 128)) * 0.12


def set_budgets(home: Path, *, per_principal: int | None = None, per_subject: int | None = None,
                window: float | None = None) -> None:
    """Change a (closed) vault's query budgets as its admin does: vault.json is signed, so only
    ``Vault.save_config`` may change it."""
    with Vault.open(home, api_key=vault_keys(home).admin) as admin:
        config = admin.config
        if per_principal is not None:
            config.budget_per_principal = per_principal
        if per_subject is not None:
            config.budget_per_subject = per_subject
        if window is not None:
            config.budget_window_seconds = window
        admin.save_config()
