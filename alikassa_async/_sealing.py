"""Payout bodies sealed at rest, openable only by holders of the payout certificate.

>>> seal = BatchSeal.derive(payout_cert, "payroll-2026-12")
>>> blob = seal.seal(order_id, body)          # AES-256-GCM, order_id bound in
>>> seal.open(order_id, blob) == body

A shared database must not hold card or phone numbers in clear, and a dump
of it must neither pay anybody nor leak anybody. So the batch key is not
stored anywhere: it is *derived* from the payout private key. RSA PKCS#1 v1.5
signatures are deterministic, so the signature of a fixed, batch-scoped label
is the same on every machine that holds the key, and nobody without the
private key can compute it (that would be forging a signature). HKDF-SHA256
turns that signature into two keys:

- an AES-256-GCM key for the payout body (random 96-bit nonce per seal; the
  batch and ``order_id`` are the associated data, so a sealed body cannot be
  moved to another row or batch), and
- an HMAC-SHA256 key for the body digest that detects a changed body on
  reload. A plain SHA-256 of a body could be brute-forced for the card
  number (16 digits, known BIN and Luhn leave ~10^9 candidates); a keyed
  digest cannot.

A key-check value (an HMAC of a constant) is stored with the batch, so a
worker started with another certificate is refused before it claims anything.
Why not a random data key wrapped with RSA-OAEP? Anyone with the *public*
key (it is registered at the gateway, not secret) could then wrap a key of
their own and plant payouts; a key only the private key can derive also
authenticates what was sealed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._errors import ConfigurationError
from ._signing import Certificate

__all__ = ["BatchSeal", "SealError"]

_VERSION = b"\x01"
_LABEL = b"alikassa-async/payout-seal/v1\x00batch="
_SALT = b"alikassa-async payout seal v1"
_NONCE = 12


class SealError(ConfigurationError):
    """Sealed data does not open: another certificate, or the database row was altered."""


class BatchSeal:
    """The keys of one batch, derived from the payout certificate (see the module doc)."""

    __slots__ = ("_aead", "_digest_key", "batch", "key_check")

    def __init__(self, batch: str, secret: bytes) -> None:
        self.batch = batch
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=64,
            salt=_SALT,
            info=b"aes-256-gcm+hmac\x00" + batch.encode(),
        ).derive(secret)
        self._aead = AESGCM(okm[:32])
        self._digest_key = okm[32:]
        #: stored with the batch: a worker holding another certificate is refused
        self.key_check = hmac.new(self._digest_key, b"key-check", hashlib.sha256).hexdigest()

    @classmethod
    def derive(cls, certificate: Certificate, batch: str) -> BatchSeal:
        if not isinstance(certificate, Certificate):
            raise ConfigurationError("sealing a batch needs the payout Certificate")
        signature = base64.b64decode(certificate.sign(_LABEL + batch.encode(), "sha256"))
        return cls(batch, signature)

    def __repr__(self) -> str:
        return f"BatchSeal(batch={self.batch!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("BatchSeal cannot be pickled: it holds key material")

    def _aad(self, order_id: str) -> bytes:
        return b"v1\x00" + self.batch.encode() + b"\x00" + order_id.encode()

    def digest(self, body: bytes) -> str:
        """Keyed digest of a request body (hex): equal bodies, equal digests."""
        return hmac.new(self._digest_key, body, hashlib.sha256).hexdigest()

    def seal(self, order_id: str, body: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, body, self._aad(order_id))

    def open(self, order_id: str, blob: bytes) -> bytes:
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE + 16:
            raise SealError(f"sealed body of order_id={order_id!r} has an unknown format")
        nonce = blob[1 : 1 + _NONCE]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE :], self._aad(order_id))
        except InvalidTag:
            raise SealError(
                f"sealed body of order_id={order_id!r} does not open: another "
                "payout certificate, or the row was altered"
            ) from None
