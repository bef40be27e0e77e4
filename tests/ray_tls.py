"""Ray's TLS for the cluster tests: a throw-away CA and node certificate, and the environment
that turns TLS on.

Ray's native core reads ``RAY_USE_TLS`` once, when the ``ray`` package is first imported, so
this module must be imported before Ray (test_cluster imports it first); it refuses to run
after. It names the files then; :func:`write_certificates` writes them before the cluster
starts, for the addresses Ray itself picks. They live in a private temporary directory removed
at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TLS_FILES = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
_FILES = dict(zip(TLS_FILES, ("node.crt", "node.key", "ca.crt"), strict=True))


def _addresses(extra: set[str]) -> set[str]:
    """The addresses Ray may listen on here: loopback, the one Ray picks (``extra``) and the
    interface of the default route."""
    found = {"127.0.0.1", *extra}
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
        found.add(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    with contextlib.suppress(OSError):
        found.add(socket.gethostbyname(socket.gethostname()))
    return found


def write_certificates(addresses: set[str]) -> None:
    """A CA and a node certificate valid for ``addresses`` (and the loopback), at the paths the
    environment names."""
    _write(_DIR, addresses)


def _write(directory: Path, addresses: set[str]) -> dict[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faceseal test ray ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(_addresses(addresses))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ray node")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: directory / file for name, file in _FILES.items()}
    paths["RAY_TLS_CA_CERT"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["RAY_TLS_SERVER_CERT"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["RAY_TLS_SERVER_KEY"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    paths["RAY_TLS_SERVER_KEY"].chmod(0o600)
    return {name: str(path) for name, path in paths.items()}


if "ray" in sys.modules:
    raise RuntimeError("tests/ray_tls.py must be imported before Ray (RAY_USE_TLS is read once)")
_DIR = Path(tempfile.mkdtemp(prefix="faceseal-ray-tls-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
os.environ.update({name: str(_DIR / file) for name, file in _FILES.items()}, RAY_USE_TLS="1")
