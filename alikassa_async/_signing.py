"""Request signing and signature verification (RSA PKCS#1 v1.5, base64).

A :class:`Certificate` holds one decrypted private key, loaded once: the RSA
consistency check costs tens of milliseconds and must not run per request.
A :class:`Verifier` holds a public key and accepts SHA-1 or SHA-256
signatures, because AliKassa's samples disagree on the hash (API reference §3.4).

>>> cert = Certificate.from_dir("cert/payout")        # private.pem + password.txt
>>> cert.sign(b'[]')                                  # base64 for the Sign header
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._errors import ConfigurationError, SignatureError

__all__ = ["Certificate", "SignatureHash", "Verifier"]

SignatureHash = Literal["sha1", "sha256"]
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    try:
        return _HASHES[name]()
    except KeyError:
        raise ConfigurationError(
            f"signature_hash must be 'sha1' or 'sha256', not {name!r}"
        ) from None


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None


def _fingerprint(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def _password_candidates(password: bytes | str | None) -> list[bytes]:
    if password is None:
        return []
    raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    if not raw.strip():
        return []  # a blank password.txt is a setup mistake, reported as such
    # PHP passes password.txt untrimmed, the other samples strip it: try both, and
    # the same without a UTF-8 byte-order mark (a file saved by Windows Notepad).
    unmarked = raw.removeprefix(b"\xef\xbb\xbf")
    return list(dict.fromkeys(p for p in (raw, raw.rstrip(), unmarked, unmarked.rstrip()) if p))


def _load_private_key(pem: bytes, password: bytes | str | None) -> rsa.RSAPrivateKey:
    if b"PRIVATE KEY-----" not in pem:
        if b"PUBLIC KEY-----" in pem or b"CERTIFICATE-----" in pem:
            raise ConfigurationError("expected a private key but got a public key/certificate")
        raise ConfigurationError("not a PEM private key (no 'BEGIN ... PRIVATE KEY' block)")
    encrypted = b"ENCRYPTED" in pem
    candidates = _password_candidates(password) if encrypted else [b""]
    if encrypted and not candidates:
        raise ConfigurationError("the private key is encrypted but the password is empty")
    key = None
    for candidate in candidates:
        try:
            key = serialization.load_pem_private_key(pem, candidate or None)
            break
        except ValueError:
            continue  # wrong password or damaged PEM: try the next form, then report
        except (TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigurationError(f"cannot load the private key: {exc}") from None
    if key is None:
        if encrypted:
            raise ConfigurationError(
                "cannot decrypt the private key: wrong password or damaged PEM"
            )
        raise ConfigurationError("cannot load the private key: damaged or unsupported PEM")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(
            f"the private key must be RSA, not {type(key).__name__.lstrip('_')}"
        )
    return key


class Certificate:
    """One AliKassa API certificate's private key (payment or payout archive).

    ``repr()`` shows only a public fingerprint, never key material or password.
    """

    __slots__ = ("_key", "fingerprint", "key_size", "name")

    def __init__(self, private_key: rsa.RSAPrivateKey, *, name: str = "certificate") -> None:
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ConfigurationError("Certificate needs an RSA private key")
        self._key = private_key
        self.name = name
        self.key_size: int = private_key.key_size
        self.fingerprint: str = _fingerprint(private_key.public_key())

    @classmethod
    def from_pem(
        cls, pem: bytes | str, password: bytes | str | None = None, *, name: str = "certificate"
    ) -> Certificate:
        """Load a PEM key: legacy encrypted PKCS#1, encrypted PKCS#8 or unencrypted."""
        data = pem.encode("ascii", "replace") if isinstance(pem, str) else bytes(pem)
        try:
            key = _load_private_key(data, password)
        except ConfigurationError as exc:
            # Error trackers capture frame locals: the raise below keeps none that hold the
            # key or its password, and drops the deeper frames that did.
            del data, pem, password
            raise exc.with_traceback(None) from None
        return cls(key, name=name)

    @classmethod
    def from_files(
        cls, private_pem: str | Path, password_file: str | Path | None = None
    ) -> Certificate:
        """Load ``private_pem`` with the password read from ``password_file``."""
        password = _read(password_file, "password file") if password_file is not None else None
        try:
            return cls.from_pem(
                _read(private_pem, "private key"),
                password,
                name=Path(private_pem).parent.name or "certificate",
            )
        except ConfigurationError as exc:
            del password  # as in from_pem: no captured frame holds it
            raise exc.with_traceback(None) from None

    @classmethod
    def from_dir(cls, path: str | Path) -> Certificate:
        """Load an unpacked archive: ``private.pem`` plus ``password.txt`` if present."""
        folder = Path(path)
        if not folder.is_dir():
            raise ConfigurationError(f"certificate directory {str(folder)!r} does not exist")
        password_file = folder / "password.txt"
        return cls.from_files(
            folder / "private.pem", password_file if password_file.exists() else None
        )

    def public_key_pem(self) -> bytes:
        """The matching ``public.pem`` (SPKI), e.g. to register with a sandbox."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes, signature_hash: SignatureHash = "sha1") -> str:
        """Base64 RSA PKCS#1 v1.5 signature of ``data``, ready for the ``Sign`` header."""
        raw = self._key.sign(data, padding.PKCS1v15(), hash_algorithm(signature_hash))
        return base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return (
            f"Certificate(name={self.name!r}, key_size={self.key_size}, "
            f"fingerprint={self.fingerprint!r})"
        )

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("Certificate cannot be pickled: it holds a private key")


def _load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key: object
    try:
        if b"CERTIFICATE-----" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(f"cannot load the public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigurationError("the public key must be RSA")
    return key


class Verifier:
    """An RSA public key that checks base64 PKCS#1 v1.5 signatures (SHA-1 or SHA-256)."""

    __slots__ = ("_key", "fingerprint", "hashes")

    def __init__(
        self,
        public_key: rsa.RSAPublicKey,
        *,
        hashes: tuple[SignatureHash, ...] = ("sha1", "sha256"),
    ) -> None:
        self._key = public_key
        self.hashes = hashes
        self.fingerprint = _fingerprint(public_key)

    @classmethod
    def from_pem(cls, pem: bytes | str) -> Verifier:
        """Accepts ``BEGIN PUBLIC KEY``, ``BEGIN RSA PUBLIC KEY`` or an X.509 certificate."""
        data = pem.encode("ascii", "replace") if isinstance(pem, str) else bytes(pem)
        return cls(_load_public_key(data))

    @classmethod
    def from_file(cls, path: str | Path) -> Verifier:
        return cls.from_pem(_read(path, "public key"))

    @staticmethod
    def decode_signature(sign: str | bytes) -> bytes:
        """Strict standard-alphabet base64; anything else is a :class:`SignatureError`."""
        try:
            text = sign.strip() if isinstance(sign, bytes) else sign.strip().encode("ascii")
            return base64.b64decode(text, validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise SignatureError("sign is not valid base64") from None

    def matching_hash(self, data: bytes, signature: bytes) -> SignatureHash | None:
        """The hash under which ``signature`` verifies ``data``, or ``None``."""
        for name in self.hashes:
            try:
                self._key.verify(signature, data, padding.PKCS1v15(), hash_algorithm(name))
            except InvalidSignature:
                continue
            return name
        return None

    def verify(self, data: bytes, sign: str | bytes) -> SignatureHash:
        """Check a base64 signature over ``data``; raise :class:`SignatureError` if it fails."""
        matched = self.matching_hash(data, self.decode_signature(sign))
        if matched is None:
            raise SignatureError("signature does not verify")
        return matched

    def __repr__(self) -> str:
        return f"Verifier(fingerprint={self.fingerprint!r})"
