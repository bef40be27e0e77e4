"""``faceseal serve``: open the vault once, unbound, and serve it with uvicorn.

One process, one event loop; blocking vault calls run in a bounded thread pool. The socket is
bound before serving, so ``--port 0`` works (the kernel picks a free port, announced on stderr
and in ``--port-file``). TLS options go to uvicorn unchanged. Proxy headers
(``X-Forwarded-For``, ``X-Forwarded-Proto``) are honoured only from the addresses given with
``--trusted-proxy``: without it, a client cannot pose as another address to escape the
failed-authentication rate limit.
"""

from __future__ import annotations

import contextlib
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

from faceseal.errors import InvalidInput, UserError
from faceseal.http.console.settings import ConsoleSettings
from faceseal.http.settings import Settings
from faceseal.keys.env_secrets import scrub_environment
from faceseal.keys.process_guard import protect_process
from faceseal.vault import Vault

log = logging.getLogger("faceseal.http")

#: Environment variable holding the password of an encrypted TLS key file (never an argument:
#: arguments show in ``ps``).
TLS_PASSWORD_ENV = "FACESEAL_TLS_KEY_PASSWORD"  # noqa: S105 - a variable name
#: At most this many server processes (a replica each holds every loaded gallery in memory).
MAX_WORKERS = 64
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
    #: Server processes sharing the socket, each a full replica (see :func:`serve_vault`).
    workers: int = 1
    #: Shard actors answering identify (0: this process's gallery); docs/scale-out.md.
    shards: int = 0
    #: An existing Ray cluster to start them on (None: an embedded one on the loopback).
    ray_address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS:
            raise InvalidInput(f"--workers must be within 1..{MAX_WORKERS}")
        if not 0 <= self.port <= 65535:
            raise InvalidInput("the port must be within 0..65535")
        if not 0 <= self.shards <= 4096:
            raise InvalidInput("--shards must be within 0..4096")
        if self.ray_address is not None and not self.shards:
            raise InvalidInput("--ray-address needs --shards N")
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
    """Open the vault at ``home`` (unbound) and serve it until SIGINT/SIGTERM; then close it.

    With ``options.workers`` > 1 the socket is bound once and that many processes serve it, each
    a full replica (its own vault, galleries and change follower, coherent through the store's
    change log, see docs/architecture.md); this process only supervises them."""
    options.check()
    if options.workers > 1 and settings.rate_limits == "memory":
        raise InvalidInput("--workers needs shared counters (--rate-limits store or a redis:// "
                           "URL): in memory, every worker would keep its own query budgets and "
                           "failed-authentication counts")
    if options.workers > 1 and options.shards:
        raise InvalidInput("--workers and --shards do not mix: each worker would start shards "
                           "of its own; use one or the other")
    if options.workers > 1 and console is not None and console.enabled:
        raise InvalidInput("--workers needs --no-console: console sessions live in one "
                           "process's memory, and a browser's next request may reach another "
                           "worker")
    protect_process()
    sock = bind_socket(options.host, options.port)
    try:
        if options.workers > 1:
            _supervise(home, settings, options, passphrase=_once(passphrase),
                       announce=announce, sock=sock, console=console)
        else:
            _serve(home, settings, options, passphrase=passphrase, sock=sock,
                   ready=lambda url, vault_id: _announce(options, announce, url, vault_id),
                   console=console)
    finally:
        sock.close()
    log.info("faceseal: stopped")


def _announce(options: ServerOptions, announce: Callable[[str], None] | None, url: str,
              vault_id: str) -> None:
    if options.port_file is not None:
        _write_port_file(options.port_file, int(url.rsplit(":", 1)[1]))
    (announce or _stderr)(f"faceseal: serving vault {vault_id} on {url}")


def _serve(home: Path | None, settings: Settings, options: ServerOptions, *,
           passphrase: Callable[[], Any], sock: socket.socket,
           ready: Callable[[str, str], None], console: ConsoleSettings | None) -> None:
    """One replica: open the vault, serve ``sock`` until a signal, close the vault."""
    import uvicorn  # noqa: PLC0415 - the server extra

    from faceseal.encoders import DlibResNetEncoder  # noqa: PLC0415
    from faceseal.http.app import create_app  # noqa: PLC0415

    def encoder(**vault_settings: Any) -> DlibResNetEncoder:
        return DlibResNetEncoder(**vault_settings, max_pixels=settings.max_image_pixels,
                                 max_bytes=settings.max_body_bytes,
                                 max_detect_pixels=settings.max_detect_pixels)

    vault = Vault.open(home, passphrase=passphrase, encoder_factory=encoder)
    shards: Any = None
    try:
        vault.follow_changes(settings.follow_interval)
        if options.shards:
            # Before the environment is scrubbed: an embedded Ray's workers inherit it (the
            # keyring passphrase, if any, which each shard needs to open the vault itself).
            shards = _start_shards(vault, options, settings.follow_interval)
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
        if not options.ssl_certfile and not _is_loopback(host):
            log.warning("serving plain HTTP on %s: API keys and photos cross the network in "
                        "clear; terminate TLS here (--ssl-certfile) or in a reverse proxy", host)
        ready(f"{scheme}://{shown}:{port}", vault.vault_id)
        with _graceful_signals():
            server.run(sockets=[sock])
    finally:
        if shards is not None:
            from faceseal.cluster.launch import detach  # noqa: PLC0415 - the cluster extra

            detach(vault, shards)
        vault.close()  # overwrites decrypted templates, writes the final audit checkpoint


def _once(source: Callable[[], Any]) -> Callable[[], Any]:
    """``source`` asked at most once (a passphrase prompt is not repeated per worker)."""
    cache: list[Any] = []

    def get() -> Any:
        if not cache:
            cache.append(source())
        return cache[0]
    return get


def _supervise(home: Path | None, settings: Settings, options: ServerOptions, *,
               passphrase: Callable[[], Any], announce: Callable[[str], None] | None,
               sock: socket.socket, console: ConsoleSettings | None) -> None:
    """Fork ``options.workers`` replicas on ``sock``; announce once all are ready; on SIGINT or
    SIGTERM stop them all; if one dies, stop the rest and fail (never serve degraded quietly)."""
    # Opened once here first: a wrong passphrase or a broken vault fails once, before any fork,
    # and the passphrase (if any) is asked here and inherited, not asked per worker.
    Vault.open(home, passphrase=passphrase).close()
    read_end, write_end = os.pipe()
    urls: list[str] = []
    children: list[int] = []
    for _ in range(options.workers):
        pid = os.fork()
        if pid == 0:  # a worker: serve, then leave without running the parent's cleanup
            os.close(read_end)
            code = 0
            try:
                def ready(url: str, vault_id: str) -> None:
                    os.write(write_end, f"{url} {vault_id}\n".encode())
                _serve(home, settings, options, passphrase=passphrase, sock=sock, ready=ready,
                       console=console)
            except BaseException:  # reported, then the worker exits non-zero
                log.exception("faceseal worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    os.close(write_end)
    with os.fdopen(read_end) as announcements:
        for _ in children:
            line = announcements.readline()
            if not line:
                break
            urls.append(line.split()[0])
            vault_id = line.split()[1]
    if len(urls) == len(children):
        _announce(options, announce, urls[0], vault_id)
        log.info("faceseal: %d workers serving", len(children))
    _wait_for_workers(children, failed=len(urls) < len(children))


def _wait_for_workers(children: list[int], *, failed: bool) -> None:
    alive = set(children)

    def stop_all(*_: object) -> None:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGINT, signal.SIGTERM)}
    if failed:
        stop_all()
    try:
        while alive:
            pid, status = os.wait()
            alive.discard(pid)
            if status != 0 and not failed:
                log.error("a faceseal worker exited (status %d); stopping the others", status)
                failed = True
                stop_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise InvalidInput("a server worker failed; see the log above")


def _start_shards(vault: Vault, options: ServerOptions, follow_interval: float) -> Any:
    try:
        from faceseal.cluster.launch import attach  # noqa: PLC0415 - the cluster extra
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "ray":
            raise
        raise UserError("--shards needs the cluster extra (Ray is not installed); run: "
                        "pip install 'faceseal[cluster]'") from None
    return attach(vault, options.shards, ray_address=options.ray_address,
                  follow_interval=follow_interval)


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
