"""How the CLI speaks: one JSON document with ``--json``, short readable lines otherwise.

Exit statuses: 0 success (and a match), 1 no match, 2 bad input or usage, 3 authentication or
access denied, 4 not found, 5 internal error (key provider or keyring, store, audit log, encoder).
The status of each error class comes from :data:`EXIT_CODES` (the error classes themselves know
no transport).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from faceseal import errors
from faceseal.errors import BadSources, FacesealError
from faceseal.vault.guard import NO_KEY_MESSAGE

EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_BAD_INPUT = 2
EXIT_DENIED = 3
EXIT_NOT_FOUND = 4
EXIT_INTERNAL = 5

#: The exit status of every faceseal error class: the only place one is chosen. Each class is
#: listed (a test walks the hierarchy); user errors exit 2-4, internal ones 5.
EXIT_CODES: dict[type[BaseException], int] = {
    errors.FacesealError: EXIT_INTERNAL,
    # user errors: the caller can fix them
    errors.UserError: EXIT_BAD_INPUT,
    errors.InvalidInput: EXIT_BAD_INPUT,
    errors.ImageUnreadable: EXIT_BAD_INPUT,
    errors.ImageTooLarge: EXIT_BAD_INPUT,
    errors.NoFaceFound: EXIT_BAD_INPUT,
    errors.MultipleFacesFound: EXIT_BAD_INPUT,
    errors.BadSources: EXIT_BAD_INPUT,
    errors.InvalidEncoding: EXIT_BAD_INPUT,
    errors.ImplausibleProbe: EXIT_BAD_INPUT,
    errors.ThresholdTooLoose: EXIT_BAD_INPUT,
    errors.Conflict: EXIT_BAD_INPUT,
    errors.MalformedRequest: EXIT_BAD_INPUT,
    errors.UnsupportedMediaType: EXIT_BAD_INPUT,
    errors.RequestTooLarge: EXIT_BAD_INPUT,
    errors.AuthenticationFailed: EXIT_DENIED,
    errors.AccessDenied: EXIT_DENIED,
    errors.RateLimited: EXIT_DENIED,
    errors.BudgetExceeded: EXIT_DENIED,
    errors.NotFound: EXIT_NOT_FOUND,
    # internal errors: the deployment failed a valid request
    errors.InternalError: EXIT_INTERNAL,
    errors.KeyringError: EXIT_INTERNAL,
    errors.EncoderUnavailable: EXIT_INTERNAL,
    errors.KeyProviderUnavailable: EXIT_INTERNAL,
    errors.StorageUnavailable: EXIT_INTERNAL,
    errors.StorageMisconfigured: EXIT_INTERNAL,
    errors.AuditWriteFailed: EXIT_INTERNAL,
    errors.IntegrityFailure: EXIT_INTERNAL,
    errors.ServiceTimeout: EXIT_INTERNAL,
    errors.ServiceUnavailable: EXIT_INTERNAL,
    errors.ShardUnavailable: EXIT_INTERNAL,
    errors.DecryptionError: EXIT_INTERNAL,
}


def exit_code_for(error: BaseException | type[BaseException]) -> int:
    """The exit status of an error (its nearest listed class; 5 for anything not faceseal's)."""
    cls = error if isinstance(error, type) else type(error)
    for klass in cls.__mro__:
        status = EXIT_CODES.get(klass)
        if status is not None:
            return status
    return EXIT_INTERNAL

#: Messages of the Python API said the way a command-line user acts on them.
_CLI_WORDING = {
    NO_KEY_MESSAGE: "no API key: use --key-file FILE or $FACESEAL_API_KEY (the key "
                    "`faceseal init` showed for the first admin, or one `faceseal principals "
                    "add` made; keep it in a file only you can read)",
}


@dataclass
class Output:
    """Per-invocation output settings, shared by every command through the click context."""

    json: bool = False
    debug: bool = False

    def emit(self, document: dict[str, Any], human: Callable[[], None]) -> None:
        """Print ``document`` as JSON, or call ``human`` to print readable lines."""
        if self.json:
            click.echo(json.dumps(document, indent=2, sort_keys=True))
        else:
            human()

    def fail(self, error: BaseException) -> NoReturn:
        """Report ``error`` on one stderr line (JSON on stdout too with --json) and exit >= 2."""
        if isinstance(error, FacesealError):
            code, message, status = error.code, str(error), exit_code_for(error)
            message = _CLI_WORDING.get(message, message)
        else:
            # A bug, not a user mistake. Its text could carry anything, so it is not printed
            # unless --debug asks for the traceback.
            code, message, status = "internal_error", "internal error", EXIT_INTERNAL
            if not self.debug:
                message += " (run with --debug for details)"
        if self.debug:
            traceback.print_exception(error, file=sys.stderr)
        if self.json:
            body: dict[str, Any] = {"code": code, "message": message}
            if isinstance(error, BadSources):
                body["problems"] = error.problems
            click.echo(json.dumps({"error": body}, indent=2))
        click.echo(f"faceseal: error: {message}", err=True)
        raise SystemExit(status)
