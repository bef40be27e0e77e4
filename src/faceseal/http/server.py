"""``faceseal serve``: open the vault once, unbound, and serve it with uvicorn.

One process, one event loop; blocking vault calls run in a bounded thread pool. The socket is
bound before serving, so ``--port 0`` works (the kernel picks a free port, announced on stderr
and in ``--port-file``). TLS options go to uvicorn unchanged. Proxy headers
(``X-Forwarded-For``, ``X-Forwarded-Proto``) are honoured only from the addresses given with
``--trusted-proxy``: without it, a client cannot pose as another address to escape the
failed-authentication rate limit.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceseal.errors import InvalidInput
from faceseal.http.console.settings import ConsoleSettings
from faceseal.http.settings import Settings
from faceseal.keys.env_secrets import scrub_environment
from faceseal.keys.process_guard import protect_process
from faceseal.vault import Vault

log = logging.getLogger("faceseal.http")

#: Environment variable holding the password of an encrypted TLS key file (never an argument:
#: arguments show in ``ps``).
TLS_PASSWORD_ENV = "FACESEAL_TLS_KEY_PASSWORD"  # noqa: S105 - a variable name
CLIENT_CERT_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                     "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True)
class ServerOptions:
    """Where and how to listen."""

    host: str = "127.0.0.1"
    port: int = 8000
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_ca_certs: Path | None = None
    client_certs: str = "none"
    trusted_proxies: tuple[str, ...] = ()
    root_path: str = ""
    port_file: Path | None = None
    limit_concurrency: int | None = None
    keep_alive_seconds: int = 5
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidInput("the port must be within 0..65535")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise InvalidInput("TLS needs both --ssl-certfile and --ssl-keyfile")
        if self.client_certs not in CLIENT_CERT_MODES:
            raise InvalidInput("--client-certs is none, optional or required")
        if self.client_certs != "none" and (self.ssl_ca_certs is None
                                            or self.ssl_certfile is None):
            raise InvalidInput("client certificates need TLS and --ssl-ca-certs")
        for proxy in self.trusted_proxies:
            if proxy == "*":
                continue
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise InvalidInput(f"--trusted-proxy {proxy!r} is not an address or network "
                                   "(or *)") from None
        if self.root_path and (not self.root_path.startswith("/")
                               or self.root_path.endswith("/")):
            raise InvalidInput("--root-path starts with / and does not end with one")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise InvalidInput(f"cannot resolve the host {host!r}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve_vault(
    home: Path | None,
    settings: Settings,
    options: ServerOptions,
    *,
    passphrase: Callable[[], Any],
    announce: Callable[[str], None] | None = None,
    console: ConsoleSettings | None = None,
) -> None:
    """Open the vault at ``home`` (unbound) and serve it until SIGINT/SIGTERM; then close it."""
    import uvicorn  # noqa: PLC0415 - the server extra

    from faceseal.encoders import DlibResNetEncoder  # noqa: PLC0415
    from faceseal.http.app import create_app  # noqa: PLC0415

    options.check()
    protect_process()
    sock = bind_socket(options.host, options.port)

    def encoder(**vault_settings: Any) -> DlibResNetEncoder:
        return DlibResNetEncoder(**vault_settings, max_pixels=settings.max_image_pixels,
                                 max_bytes=settings.max_body_bytes,
                                 max_detect_pixels=settings.max_detect_pixels)

    try:
        vault = Vault.open(home, passphrase=passphrase, encoder_factory=encoder)
    except BaseException:
        sock.close()
        raise
    try:
        vault.follow_changes(settings.follow_interval)
        app = create_app(vault, settings, console)
        config = uvicorn.Config(
            app,
            ssl_certfile=_path(options.ssl_certfile),
            ssl_keyfile=_path(options.ssl_keyfile),
            ssl_keyfile_password=os.environ.get(TLS_PASSWORD_ENV) or None,
            ssl_ca_certs=_path(options.ssl_ca_certs),
            ssl_cert_reqs=CLIENT_CERT_MODES[options.client_certs],
            proxy_headers=bool(options.trusted_proxies),
            forwarded_allow_ips=list(options.trusted_proxies) or None,
            root_path=options.root_path,
            limit_concurrency=options.limit_concurrency,
            timeout_keep_alive=options.keep_alive_seconds,
            access_log=False,  # faceseal.http.access logs route templates, never ids
            server_header=False,
            log_config=None,
            log_level=options.log_level,
            lifespan="off",
            **options.extra,
        )
        server = uvicorn.Server(config)
        # Every secret the environment gave us has been read (passphrase, TLS key password):
        # a server lives long and starts children, so they leave the environment now.
        scrub_environment()
        host, port = sock.getsockname()[:2]
        scheme = "https" if options.ssl_certfile else "http"
        shown = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{shown}:{port}"
        if options.port_file is not None:
            _write_port_file(options.port_file, port)
        if not options.ssl_certfile and not _is_loopback(host):
            log.warning("serving plain HTTP on %s: API keys and photos cross the network in "
                        "clear; terminate TLS here (--ssl-certfile) or in a reverse proxy", host)
        (announce or _stderr)(f"faceseal: serving vault {vault.vault_id} on {url}")
        with _graceful_signals():
            server.run(sockets=[sock])
    finally:
        sock.close()
        vault.close()  # overwrites decrypted templates, writes the final audit checkpoint
    log.info("faceseal: stopped")


class _Stopped(BaseException):
    """Raised by our signal handler once uvicorn has shut down gracefully."""


@contextmanager
def _graceful_signals() -> Iterator[None]:
    """uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal through the
    handler it found; with the default handlers that kills the process before the vault is
    closed. Our handlers end the serve loop instead, so that the vault closes cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _path(value: Path | None) -> str | None:
    return str(value) if value is not None else None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _write_port_file(path: Path, port: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{port}\n")
    temporary.replace(path)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
