"""``faceseal serve``: the HTTP service (see docs/http.md)."""

from __future__ import annotations

from pathlib import Path

import click

from faceseal.cli.common import passphrase_from_env_or_prompt
from faceseal.cli.group import given_on_command_line, global_options
from faceseal.cli.logs import configure_logging
from faceseal.cli.output import Output
from faceseal.errors import UserError
from faceseal.vault.paths import HOME_ENV

#: The top-level modules the server extra installs.
SERVER_MODULES = frozenset({"fastapi", "uvicorn", "multipart", "python_multipart", "httpx",
                            "anyio", "pydantic", "starlette"})


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
@click.option("--max-body", "max_body_bytes", type=click.IntRange(min=1), default=8 * 2**20,
              show_default=True, help="Largest request body in bytes (413 beyond).")
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=16_000_000,
              show_default=True, help="Largest photo in pixels, checked before decoding (413 "
              "beyond).")
@click.option("--max-photos", type=click.IntRange(min=1, max=100), default=10,
              show_default=True, help="Photos per enrolment request.")
@click.option("--max-detect-pixels", type=click.IntRange(min=10_000), default=2_000_000,
              show_default=True, help="Pixels searched for faces at most; larger photos are "
              "searched downscaled and encoded at full size.")
@click.option("--photo-requests-per-principal", type=click.IntRange(min=1, max=64), default=2,
              show_default=True, help="Photo requests of one principal at work at once (more "
              "wait their turn).")
@click.option("--timeout", "request_timeout", type=click.FloatRange(min=0.1, max=3600),
              default=30.0, show_default=True, help="Seconds a request may take (503 after).")
@click.option("--auth-failures-per-key", type=click.IntRange(min=1, max=100), default=100,
              show_default=True, help="Failed authentications per key id per hour before 429 "
              "(at most 100: OWASP ASVS 2.2.1).")
@click.option("--auth-failures-per-client", type=click.IntRange(min=1), default=100,
              show_default=True, help="Failed authentications per client address (IPv6: /64) "
              "per hour before 429.")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=8, show_default=True,
              help="Threads running vault calls.")
@click.option("--limit-concurrency", type=click.IntRange(min=1), default=None,
              help="Answer 503 beyond this many connections and requests at once.")
@click.option("--rate-limits", default="store", show_default=True, metavar="store|memory|URL",
              help="Where failed-authentication counts live: the vault's store (shared by every "
                   "replica), this process's memory, or a redis:// URL.")
@click.option("--follow-interval", type=click.FloatRange(min=0.01, max=3600), default=1.0,
              show_default=True,
              help="Seconds between checks of the change log while idle (PostgreSQL notifies).")
@click.option("--no-openapi", is_flag=True, help="Do not serve /openapi.json.")
@click.option("--debug", is_flag=True, help="Log at DEBUG.")
@click.option("-v", "--verbose", count=True, help="Log at INFO (one access line per request).")
def serve(vault_dir: Path | None, host: str, port: int, port_file: Path | None,
          ssl_certfile: Path | None, ssl_keyfile: Path | None, ssl_ca_certs: Path | None,
          client_certs: str, trusted_proxies: tuple[str, ...], root_path: str,
          max_body_bytes: int, max_image_pixels: int, max_photos: int,
          max_detect_pixels: int, photo_requests_per_principal: int, request_timeout: float,
          auth_failures_per_key: int, auth_failures_per_client: int, threads: int,
          limit_concurrency: int | None, rate_limits: str, follow_interval: float,
          no_openapi: bool, debug: bool, verbose: int) -> None:
    """Serve the vault over HTTP (JSON API under /v1, OpenAPI at /openapi.json).

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
        from faceseal.http.server import ServerOptions, serve_vault  # noqa: PLC0415
        from faceseal.http.settings import Settings  # noqa: PLC0415
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] not in SERVER_MODULES:
            raise
        # A missing extra is something the user installs: bad usage (2), not "no match" (1).
        output.fail(UserError(
            f"faceseal serve needs the server extra ({error.name} is not installed); run: "
            "pip install 'faceseal[server]'"))
    try:
        settings = Settings(
            max_body_bytes=max_body_bytes, max_image_pixels=max_image_pixels,
            max_photos=max_photos, request_timeout=request_timeout,
            max_detect_pixels=max_detect_pixels,
            photo_requests_per_principal=photo_requests_per_principal,
            auth_failures_per_key=auth_failures_per_key,
            auth_failures_per_client=auth_failures_per_client, threads=threads,
            openapi=not no_openapi, rate_limits=rate_limits, follow_interval=follow_interval,
        )
        options = ServerOptions(
            host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
            ssl_ca_certs=ssl_ca_certs, client_certs=client_certs,
            trusted_proxies=trusted_proxies, root_path=root_path, port_file=port_file,
            limit_concurrency=limit_concurrency,
            log_level="debug" if debug else ("info" if verbose else "warning"),
        )
        serve_vault(vault_dir, settings, options, passphrase=passphrase_from_env_or_prompt)
    except Exception as error:
        output.fail(error)
