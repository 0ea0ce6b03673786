"""Hostile key material: every broken archive is one clear ``ConfigurationError``.

Extends tests/test_signing.py (which covers the happy layouts, a wrong password.txt,
a ``\\n``-only password file, an unencrypted EC key, an SPKI public key and one
truncated header) with the rest of what a payments team finds in a shared drive:
keys cut short, bogus ``DEK-Info`` headers, DSA/EC/Ed25519 keys in every wrapping,
public keys and certificates in ``private.pem``, zero-byte and whitespace passwords,
binary junk. No message may quote the password or the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from alikassa_async import Certificate, ConfigurationError, Verifier

from .conftest import write_archive

PASSWORD = b"Hostile-Test-Pass-0451"
#: hypothesis examples per property (docs/reliability.md)
EXAMPLES = 200
Enc = serialization.BestAvailableEncryption
PLAIN = serialization.NoEncryption()
PKCS1 = serialization.PrivateFormat.TraditionalOpenSSL
PKCS8 = serialization.PrivateFormat.PKCS8


@pytest.fixture(scope="module")
def small_rsa() -> rsa.RSAPrivateKey:
    # 1024 bits: the load-time consistency check is ~4x cheaper, which buys fuzz examples.
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.fixture(scope="module")
def legacy_pem(small_rsa: rsa.RSAPrivateKey) -> bytes:
    """The vendor's layout: ``BEGIN RSA PRIVATE KEY`` + ``Proc-Type``/``DEK-Info``."""
    return small_rsa.private_bytes(serialization.Encoding.PEM, PKCS1, Enc(PASSWORD))


def refused(pem: bytes | str, password: bytes | str | None = PASSWORD) -> ConfigurationError:
    """Load and return the error; also check that the message quotes no secret."""
    with pytest.raises(ConfigurationError) as caught:
        Certificate.from_pem(pem, password)
    message = str(caught.value)
    assert PASSWORD.decode() not in message
    body = pem.encode() if isinstance(pem, str) else pem
    for line in body.splitlines():
        if len(line) >= 16 and b"-----" not in line and b":" not in line:
            assert line.decode("latin-1") not in message
    return caught.value


# -- cut short ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["legacy-encrypted", "pkcs8-encrypted", "pkcs1-plain"])
@pytest.mark.parametrize("keep", [0.05, 0.3, 0.6, 0.95, -1])
def test_truncated_pem_is_refused(small_rsa, layout, keep):
    fmt, encryption = {
        "legacy-encrypted": (PKCS1, Enc(PASSWORD)),
        "pkcs8-encrypted": (PKCS8, Enc(PASSWORD)),
        "pkcs1-plain": (PKCS1, PLAIN),
    }[layout]
    pem = small_rsa.private_bytes(serialization.Encoding.PEM, fmt, encryption)
    # keep=-1: every line but the END line (an editor that lost the last line)
    cut = b"\n".join(pem.splitlines()[:-1]) if keep == -1 else pem[: int(len(pem) * keep)]
    error = refused(cut)
    assert "damaged" in str(error) or "not a PEM private key" in str(error)


# -- the wrong password, or none --------------------------------------------------------


@pytest.mark.parametrize("fmt", [PKCS1, PKCS8], ids=["legacy", "pkcs8"])
# (A UTF-8 byte-order mark before the right password is accepted: tests/test_signing.py.)
@pytest.mark.parametrize(
    "password",
    [
        b"wrong",
        PASSWORD + b"x",
        PASSWORD.upper(),
        b"\xef\xbb\xbf" + b"wrong",
        " " + PASSWORD.decode(),
    ],
    ids=["other", "suffix", "case", "utf8-bom-wrong", "leading-space"],
)
def test_wrong_password_is_refused_clearly(small_rsa, fmt, password):
    pem = small_rsa.private_bytes(serialization.Encoding.PEM, fmt, Enc(PASSWORD))
    assert "wrong password" in str(refused(pem, password))


@pytest.mark.parametrize(
    "content",
    [b"", b" ", b"\t\r\n", b"\n\n"],
    ids=["zero-bytes", "space", "whitespace", "newlines"],
)
def test_empty_password_file_is_refused(tmp_path, small_rsa, content):
    folder = write_archive(tmp_path / "payout", small_rsa, password=PASSWORD)
    (folder / "password.txt").write_bytes(content)
    with pytest.raises(ConfigurationError, match="password is empty"):
        Certificate.from_dir(folder)


def test_missing_password_file_for_an_encrypted_key_is_refused(tmp_path, small_rsa):
    folder = write_archive(tmp_path / "payout", small_rsa, password=PASSWORD)
    (folder / "password.txt").unlink()
    with pytest.raises(ConfigurationError, match="encrypted but the password is empty"):
        Certificate.from_dir(folder)


# -- bogus encryption headers ---------------------------------------------------------

BOGUS_DEK = [
    b"DEK-Info: AES-256-CBC,ZZZZ",  # IV not hex
    b"DEK-Info: ROT13,00112233445566778899AABBCCDDEEFF",  # no such cipher
    b"DEK-Info: DES-EDE3-CBC",  # no IV at all
    b"DEK-Info: AES-128-CBC,00",  # IV too short
    b"DEK-Info: ",
    b"DEK-Info: AES-256-CBC," + b"0" * 32,  # well-formed, but not this key's IV
    b"DEK-Info: AES-256-CBC," + b"A" * 5000,  # absurdly long
]


@pytest.mark.parametrize("dek", BOGUS_DEK, ids=range(len(BOGUS_DEK)))
def test_bogus_dek_info_is_refused(legacy_pem, dek):
    lines = legacy_pem.splitlines()
    assert lines[2].startswith(b"DEK-Info:")
    assert "wrong password or damaged PEM" in str(
        refused(b"\n".join([*lines[:2], dek, *lines[3:]]))
    )


def test_missing_proc_type_or_dek_info_is_refused(legacy_pem):
    lines = legacy_pem.splitlines()
    refused(b"\n".join([lines[0], *lines[2:]]))  # no Proc-Type
    refused(b"\n".join([*lines[:2], *lines[3:]]))  # no DEK-Info


# -- keys of the wrong kind -------------------------------------------------------------


@pytest.fixture(scope="module")
def other_keys() -> dict[str, object]:
    return {
        "dsa": dsa.generate_private_key(key_size=1024),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [
        ("dsa", PKCS1),
        ("dsa", PKCS8),
        ("ec", PKCS1),
        ("ec", PKCS8),
        ("ed25519", PKCS8),
    ],
    ids=["dsa-traditional", "dsa-pkcs8", "ec-traditional", "ec-pkcs8", "ed25519-pkcs8"],
)
@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_non_rsa_keys_are_refused_in_every_wrapping(other_keys, kind, fmt, encrypted):
    key: object = other_keys[kind]
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        fmt,  # type: ignore[attr-defined]
        Enc(PASSWORD) if encrypted else PLAIN,
    )
    assert "must be RSA" in str(refused(pem))


def test_public_keys_and_certificates_where_a_private_key_belongs(small_rsa, tmp_path):
    public = small_rsa.public_key()
    for fmt in (serialization.PublicFormat.PKCS1, serialization.PublicFormat.SubjectPublicKeyInfo):
        pem = public.public_bytes(serialization.Encoding.PEM, fmt)
        assert "public key" in str(refused(pem, None))
    certificate = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
    assert "public key/certificate" in str(refused(certificate, None))
    openssh = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert "not a PEM private key" in str(refused(openssh, None))
    # The archive's public.pem copied over private.pem, loaded the usual way:
    folder = write_archive(tmp_path / "payment", small_rsa, password=PASSWORD)
    (folder / "private.pem").write_bytes((folder / "public.pem").read_bytes())
    with pytest.raises(ConfigurationError, match="public key"):
        Certificate.from_dir(folder)


# -- junk -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\x00" * 64,
        b"\xff\xfe" + "-----BEGIN RSA PRIVATE KEY-----".encode("utf-16-le"),
        b"-----BEGIN RSA PRIVATE KEY-----\n\x00\xff garbage\n-----END RSA PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 2_000_000 + b"\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n!!!!\n-----END ENCRYPTED PRIVATE KEY-----\n",
    ],
    ids=["empty", "zeros", "utf16", "binary-inside", "2MB-base64", "bad-base64"],
)
def test_junk_is_refused(junk):
    refused(junk)


def test_a_der_key_or_a_directory_in_place_of_private_pem_is_refused(small_rsa, tmp_path):
    der = small_rsa.private_bytes(serialization.Encoding.DER, PKCS8, PLAIN)
    refused(der, None)
    folder = tmp_path / "payout"
    (folder / "private.pem").mkdir(parents=True)
    with pytest.raises(ConfigurationError, match="cannot read private key"):
        Certificate.from_dir(folder)


@settings(max_examples=EXAMPLES, deadline=None)
@given(junk=st.binary(max_size=400), password=st.none() | st.binary(max_size=20))
def test_any_bytes_give_a_certificate_or_a_configuration_error(junk, password):
    try:
        cert = Certificate.from_pem(junk, password)
    except ConfigurationError as exc:  # anything else (ValueError, a crash) fails the test
        if password is not None and len(password) >= 8:
            assert password.decode("latin-1") not in str(exc)
    else:  # a key that loaded is a working signer
        assert Verifier.from_pem(cert.public_key_pem()).verify(b"[]", cert.sign(b"[]"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    inside=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    label=st.sampled_from([b"RSA PRIVATE KEY", b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY"]),
    password=st.none() | st.just(PASSWORD),
)
def test_any_armoured_junk_is_a_configuration_error(inside, label, password):
    pem = b"-----BEGIN " + label + b"-----\n" + inside + b"\n-----END " + label + b"-----\n"
    refused(pem, password)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_a_mutated_vendor_pem_loads_or_is_refused_never_crashes(legacy_pem, data):
    """One to three bytes changed anywhere in a genuine legacy-encrypted PEM."""
    pem = bytearray(legacy_pem)
    for _ in range(data.draw(st.integers(1, 3))):
        pem[data.draw(st.integers(0, len(pem) - 1))] = data.draw(st.integers(0, 255))
    try:
        cert = Certificate.from_pem(bytes(pem), PASSWORD)
    except ConfigurationError as exc:
        assert PASSWORD.decode() not in str(exc)
        return
    assert cert.key_size >= 1024


def test_vendor_des3_fixture_with_a_wrong_password_is_refused(tmp_path):
    folder = Path(__file__).parent / "fixtures" / "keys" / "legacy_des3"
    (tmp_path / "password.txt").write_bytes(b"vendor-pass-but-not-quite")
    with pytest.raises(ConfigurationError, match="wrong password"):
        Certificate.from_files(folder / "private.pem", tmp_path / "password.txt")


@pytest.mark.parametrize("wrong", [False, True], ids=["unsupported key", "wrong password"])
def test_a_refused_key_leaves_no_secret_in_the_frames_an_error_tracker_captures(
    tmp_path, small_rsa, wrong
):
    # Sentry and friends capture every frame's locals: none may hold the PEM or a password.
    from cryptography.hazmat.primitives.asymmetric import ec

    key = small_rsa if wrong else ec.generate_private_key(ec.SECP256R1())
    folder = write_archive(tmp_path / "payout", key, password=PASSWORD)
    if wrong:
        (folder / "password.txt").write_bytes(b"not-the-password-42")
    with pytest.raises(ConfigurationError) as caught:
        Certificate.from_dir(folder)
    secrets = [PASSWORD, b"not-the-password-42", b"PRIVATE KEY"]
    tb = caught.value.__traceback__
    sdk_frames = 0
    while tb is not None:
        if "alikassa_async" in tb.tb_frame.f_code.co_filename:  # the SDK's, not this test's
            sdk_frames += 1
            for name, value in tb.tb_frame.f_locals.items():
                shown = repr(value).encode()
                assert not any(s in shown for s in secrets), (tb.tb_frame.f_code.co_name, name)
        tb = tb.tb_next
    assert sdk_frames >= 1
