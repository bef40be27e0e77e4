"""``faceseal serve``: the HTTP service (see docs/http.md)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from faceseal.cli.common import passphrase_from_env_or_prompt
from faceseal.cli.group import given_on_command_line, global_options
from faceseal.cli.logs import configure_logging
from faceseal.cli.output import Output
from faceseal.errors import UserError
from faceseal.http.console.settings import DEFAULT_IDLE_SECONDS
from faceseal.http.settings import Settings, env_var, specs
from faceseal.vault.paths import HOME_ENV

#: The top-level modules the server extra installs.
SERVER_MODULES = frozenset({"fastapi", "uvicorn", "multipart", "python_multipart", "httpx",
                            "anyio", "pydantic", "starlette", "jinja2", "markupsafe"})

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(command: F) -> F:
    """One option per field of :class:`Settings`: its flag, help, bounds and default from the
    field, its environment variable ``FACESEAL_<FIELD>`` (so nothing here repeats a default)."""
    for item, spec in reversed(specs()):
        kind: Any = {"bool": bool, "str": str}.get(str(item.type))
        if kind is None:
            low, high = spec.minimum, spec.maximum
            kind = (click.IntRange(None if low is None else int(low),
                                   None if high is None else int(high))
                    if item.type == "int" else click.FloatRange(low, high))
        command = click.option(spec.flag, item.name, type=kind, default=item.default,
                               show_default=True, envvar=env_var(item.name), show_envvar=True,
                               metavar=spec.metavar, help=spec.help)(command)
    return command


@click.command()
@click.option("--vault", "vault_dir", type=click.Path(file_okay=False, path_type=Path),
              envvar=HOME_ENV, help=f"Vault directory (default: ${HOME_ENV} or the platform "
              "data dir).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 or :: for every interface).")
@click.option("--port", type=int, default=8000, show_default=True,
              help="Port to listen on; 0 picks a free one (see --port-file).")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the port listened on to this file once the socket is bound.")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Serve HTTPS with this certificate (chain) in PEM.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The certificate's private key in PEM (password, if any, in "
              "$FACESEAL_TLS_KEY_PASSWORD).")
@click.option("--ssl-ca-certs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="CA certificates for client certificates (mutual TLS).")
@click.option("--client-certs", type=click.Choice(["none", "optional", "required"]),
              default="none", show_default=True, help="Ask clients for a certificate.")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDR",
              help="Honour X-Forwarded-For/-Proto only from this proxy address or network "
              "(repeatable; * trusts everyone: only behind a proxy that overwrites them).")
@click.option("--root-path", default="", help="Path prefix a reverse proxy serves the API "
              "under (e.g. /faceseal).")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="Server processes sharing the socket, each a full replica coherent through "
                   "the change log (see docs/http.md for sizing).")
@click.option("--limit-concurrency", type=click.IntRange(min=1), default=None,
              help="Answer 503 beyond this many connections and requests at once.")
@click.option("--shards", type=click.IntRange(min=0, max=4096), default=0, show_default=True,
              help="Answer identify from N shard actors on Ray (the cluster extra), each holding "
              "a keyed-hash partition of every tenant; 0: this process's gallery.")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Start the shards on this existing Ray cluster (TLS required beyond the "
              "loopback) instead of an embedded one; see docs/scale-out.md.")
@settings_options
@click.option("--no-console", is_flag=True, help="Do not serve the browser console under /ui.")
@click.option("--console-idle-timeout", type=click.FloatRange(min=1, max=86400),
              default=DEFAULT_IDLE_SECONDS,
              show_default=True, help="Seconds without a request after which a console "
              "session is signed out.")
@click.option("--debug", is_flag=True, help="Log at DEBUG.")
@click.option("-v", "--verbose", count=True, help="Log at INFO (one access line per request).")
def serve(vault_dir: Path | None, host: str, port: int, port_file: Path | None,
          ssl_certfile: Path | None, ssl_keyfile: Path | None, ssl_ca_certs: Path | None,
          client_certs: str, trusted_proxies: tuple[str, ...], root_path: str,
          workers: int, limit_concurrency: int | None, shards: int, ray_address: str | None,
          no_console: bool, console_idle_timeout: float, debug: bool, verbose: int,
          **settings_values: Any) -> None:
    """Serve the vault over HTTP (JSON API under /v1, OpenAPI at /openapi.json, the browser
    console under /ui).

    The vault is opened once without an API key; every request authenticates with its own
    (Authorization: Bearer fsk_...). Stop with Ctrl-C or SIGTERM. See docs/http.md.
    """
    before = global_options()
    debug, verbose = debug or before.debug, verbose or before.verbose
    if before.vault_dir is not None and not given_on_command_line("vault_dir"):
        vault_dir = before.vault_dir
    output = Output(debug=debug)
    configure_logging(debug, verbose)
    try:
        from faceseal.http.console.settings import ConsoleSettings  # noqa: PLC0415
        from faceseal.http.server import ServerOptions, serve_vault  # noqa: PLC0415

        importlib.import_module("faceseal.http.app")  # FastAPI and the rest of the extra
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] not in SERVER_MODULES:
            raise
        # A missing extra is something the user installs: bad usage (2), not "no match" (1).
        output.fail(UserError(
            f"faceseal serve needs the server extra ({error.name} is not installed); run: "
            "pip install 'faceseal[server]'"))
    try:
        settings = Settings(**settings_values)
        options = ServerOptions(
            host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
            ssl_ca_certs=ssl_ca_certs, client_certs=client_certs,
            trusted_proxies=trusted_proxies, root_path=root_path, port_file=port_file,
            limit_concurrency=limit_concurrency, shards=shards, ray_address=ray_address,
            workers=workers,
            log_level="debug" if debug else ("info" if verbose else "warning"),
        )
        console = ConsoleSettings(enabled=not no_console, idle_timeout=console_idle_timeout)
        serve_vault(vault_dir, settings, options, passphrase=passphrase_from_env_or_prompt,
                    console=console)
    except Exception as error:
        output.fail(error)
