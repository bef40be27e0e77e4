"""faceseal: a vault for face encodings.

Every encoding is sealed with AES-256-GCM before it reaches storage, under keys kept apart from the
data; erasing a person destroys their key material; and the vault still answers "is this the same
person?" (:meth:`Vault.verify`) and "who is this?" (:meth:`Vault.identify`).

Importing faceseal loads no model and opens no file.
"""

from faceseal.errors import (
    AccessDenied,
    AuditWriteFailed,
    AuthenticationFailed,
    DecryptionError,
    FacesealError,
    InternalError,
    InvalidInput,
    NotFound,
    UserError,
)
from faceseal.vault import (
    Candidate,
    EnrollResult,
    EraseResult,
    IdentifyResult,
    SubjectInfo,
    Vault,
    VerifyResult,
)

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AuditWriteFailed",
    "AuthenticationFailed",
    "Candidate",
    "DecryptionError",
    "EnrollResult",
    "EraseResult",
    "FacesealError",
    "IdentifyResult",
    "InternalError",
    "InvalidInput",
    "NotFound",
    "SubjectInfo",
    "UserError",
    "Vault",
    "VerifyResult",
    "__version__",
]
