"""The vault facade and what it returns."""

from faceseal.vault.config import DEFAULT_TENANT, VaultConfig
from faceseal.vault.disclosure import TenantPolicy
from faceseal.vault.results import (
    Candidate,
    CheckResult,
    EnrollResult,
    EraseResult,
    IdentifyResult,
    SubjectInfo,
    VerifyResult,
)
from faceseal.vault.vault import Vault

__all__ = [
    "DEFAULT_TENANT",
    "Candidate",
    "CheckResult",
    "EnrollResult",
    "EraseResult",
    "IdentifyResult",
    "SubjectInfo",
    "TenantPolicy",
    "Vault",
    "VaultConfig",
    "VerifyResult",
]
