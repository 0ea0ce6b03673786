"""Key loading in every layout the vendor archive may hold, and signature checks."""

from __future__ import annotations

import base64
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from alikassa_async import Certificate, ConfigurationError, SignatureError, Verifier

from .conftest import PASSWORD, write_archive

FIXTURES = Path(__file__).parent / "fixtures" / "keys"


@pytest.mark.parametrize("fmt", ["pkcs1", "pkcs8"])
@pytest.mark.parametrize("encrypted", [True, False])
def test_loads_every_layout_and_signs_verifiably(tmp_path, rsa_keys, fmt, encrypted):
    key = rsa_keys["payout"]
    folder = write_archive(tmp_path / "payout", key, fmt, PASSWORD if encrypted else None)
    pem = (folder / "private.pem").read_bytes()
    assert (b"ENCRYPTED" in pem) is encrypted
    if fmt == "pkcs1" and encrypted:
        assert b"Proc-Type: 4,ENCRYPTED" in pem  # the vendor's legacy layout
    cert = Certificate.from_dir(folder)
    signature = cert.sign(b'{"a":1}', "sha256")
    key.public_key().verify(
        base64.b64decode(signature), b'{"a":1}', padding.PKCS1v15(), hashes.SHA256()
    )
    assert Verifier.from_file(folder / "public.pem").verify(b'{"a":1}', signature) == "sha256"


def test_vendor_style_des3_archive_loads_and_defaults_to_sha1():
    cert = Certificate.from_dir(FIXTURES / "legacy_des3")
    verifier = Verifier.from_file(FIXTURES / "legacy_des3" / "public.pem")
    assert verifier.verify(b"[]", cert.sign(b"[]")) == "sha1"


def test_password_with_trailing_newline_is_accepted(tmp_path, rsa_keys):
    folder = write_archive(tmp_path / "p", rsa_keys["payment"], password_suffix=b"\r\n")
    assert Certificate.from_dir(folder).key_size == 2048


def test_wrong_password_is_a_configuration_error(tmp_path, rsa_keys):
    folder = write_archive(tmp_path / "p", rsa_keys["payment"])
    (folder / "password.txt").write_bytes(b"not-the-password")
    with pytest.raises(ConfigurationError, match="wrong password"):
        Certificate.from_dir(folder)


def test_empty_password_file_is_a_configuration_error(tmp_path, rsa_keys):
    folder = write_archive(tmp_path / "p", rsa_keys["payment"])
    (folder / "password.txt").write_bytes(b"\n")
    with pytest.raises(ConfigurationError, match="password is empty"):
        Certificate.from_dir(folder)


def test_missing_files_and_dirs_are_configuration_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        Certificate.from_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="cannot read private key"):
        Certificate.from_dir(tmp_path / "empty")


def test_non_rsa_and_public_keys_are_refused(rsa_keys):
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigurationError, match="must be RSA"):
        Certificate.from_pem(ec_pem)
    public_pem = (
        rsa_keys["payment"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigurationError, match="public key"):
        Certificate.from_pem(public_pem)
    with pytest.raises(ConfigurationError):
        Certificate.from_pem(b"-----BEGIN RSA PRIVATE KEY-----\ntruncated")


def test_repr_and_pickle_never_expose_the_key(tmp_path, rsa_keys):
    folder = write_archive(tmp_path / "payout", rsa_keys["payout"])
    cert = Certificate.from_dir(folder)
    text = repr(cert)
    assert "payout" in text and cert.fingerprint in text
    assert PASSWORD.decode() not in text and "PRIVATE" not in text
    with pytest.raises(TypeError):
        pickle.dumps(cert)


def test_verifier_accepts_pkcs1_public_keys_and_rejects_bad_signatures(rsa_keys):
    key: rsa.RSAPrivateKey = rsa_keys["notification"]
    pkcs1 = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    verifier = Verifier.from_pem(pkcs1)
    good = base64.b64encode(key.sign(b"x", padding.PKCS1v15(), hashes.SHA1())).decode()
    assert verifier.verify(b"x", good) == "sha1"
    with pytest.raises(SignatureError):
        verifier.verify(b"y", good)
    with pytest.raises(SignatureError, match="base64"):
        verifier.verify(b"x", "not base64!")


def test_password_file_with_a_byte_order_mark_is_accepted(tmp_path, rsa_keys):
    folder = write_archive(tmp_path / "p", rsa_keys["payment"])
    (folder / "password.txt").write_bytes(b"\xef\xbb\xbf" + PASSWORD + b"\r\n")
    assert Certificate.from_dir(folder).key_size == 2048
