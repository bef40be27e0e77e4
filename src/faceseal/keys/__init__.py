"""Key providers (where KEKs live), data keys, and the per-subject key store."""

from faceseal.keys.datakeys import DataKeyInfo, DataKeyManager, DataKeyRepository, Reservation
from faceseal.keys.local import LocalKeyring
from faceseal.keys.provider import KeyProvider, ProviderStatus
from faceseal.keys.subject_keys import SubjectKeyStore

__all__ = [
    "DataKeyInfo",
    "DataKeyManager",
    "DataKeyRepository",
    "KeyProvider",
    "LocalKeyring",
    "ProviderStatus",
    "Reservation",
    "SubjectKeyStore",
]
