"""How the CLI speaks: one JSON document with ``--json``, short readable lines otherwise.

Exit statuses: 0 success (and a match), 1 no match, 2 bad input or usage, 3 authentication or
access denied, 4 not found, 5 internal error (key provider, store, audit log unavailable).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from faceseal.errors import BadSources, FacesealError
from faceseal.vault.guard import NO_KEY_MESSAGE

EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_INTERNAL = 5

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
            code, message, status = error.code, str(error), error.exit_code
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


def configure_logging(debug: bool, verbose: int) -> None:
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faceseal").setLevel(level)
