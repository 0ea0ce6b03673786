"""A throwaway certificate authority and a server certificate, for ``alikassa sandbox --tls``.

Some clients insist on HTTPS (the AliKassa Ruby production client, Java's
``HttpClient`` with a pinned scheme). ``ensure_tls(certs_dir, hosts)`` writes::

    certs_dir/tls/ca.pem          the CA to trust (give it to the client)
    certs_dir/tls/ca-key.pem      its key (0600), kept so the CA survives restarts
    certs_dir/tls/server.pem      the server certificate, signed by the CA
    certs_dir/tls/server-key.pem  its key (0600)

The CA is made once and reused, so a client told to trust ``ca.pem`` keeps
trusting it; the server certificate is made anew on every start for the names
the sandbox is reached by (``localhost``, the loopback addresses, ``--host`` and
the host of ``--public-url``). The CA can sign only server certificates below it
(``path_length=0``) and nothing here is meant for anything but a local sandbox.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import _private_write

__all__ = ["SandboxTLS", "ensure_tls"]

_CA_DAYS = 3650
_SERVER_DAYS = 30
_DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


@attrs.frozen
class SandboxTLS:
    """Where :func:`ensure_tls` put the files."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "alikassa_async sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(
    ca_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    if not (ca_path.exists() and key_path.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        return None  # damaged: make a new one
    now = datetime.datetime.now(datetime.UTC)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc < now:
        return None
    return cert, key


def _new_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("alikassa_async sandbox CA (throwaway)")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in (*_DEFAULT_NAMES, *hosts):
        host = host.strip("[]").lower()
        if not host or host in seen or host in ("0.0.0.0", "::"):  # noqa: S104 - a name check
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def ensure_tls(certs_dir: str | Path, hosts: Iterable[str] = ()) -> SandboxTLS:
    """Write (or reuse) the CA and a fresh server certificate for ``hosts``; return the paths.

    Raises ``OSError`` when the directory cannot be written.
    """
    folder = Path(certs_dir) / "tls"
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = folder / "ca.pem", folder / "ca-key.pem"
    now = datetime.datetime.now(datetime.UTC)
    loaded = _load_ca(ca_path, ca_key_path)
    if loaded is None:
        ca_cert, ca_key = _new_ca(now)
        _private_write(ca_key_path, _key_pem(ca_key))
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    else:
        ca_cert, ca_key = loaded
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("alikassa_async sandbox"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_SERVER_DAYS))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server-key.pem"
    _private_write(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return SandboxTLS(ca_path=ca_path, cert_path=cert_path, key_path=key_path)
