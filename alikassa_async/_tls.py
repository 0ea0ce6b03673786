"""The one TLS rule for every HTTP backend: the trust store is what ``verify=`` says.

- ``verify=True``: the certifi bundle that httpx ships with (the same on every
  machine, whatever the OS store or the environment holds);
- ``verify="ca.pem"`` (a file or a directory): only those CAs;
- ``verify=<ssl.SSLContext>``: that context, refused if it does not verify the
  certificate (``CERT_NONE``) or the host name (``check_hostname=False``);
- ``verify=False``: refused — pass the CA of the server you trust instead.

The environment is ignored unless ``tls_from_env=True``: ``SSL_CERT_FILE`` /
``SSL_CERT_DIR`` then replace the trust store of ``verify=True``, and
``SSLKEYLOGFILE`` turns on writing TLS session keys (for Wireshark). Python's
``ssl.create_default_context`` would honour ``SSLKEYLOGFILE`` silently; a
payments client must not write its session keys to disk because a variable was
left set on a server.

One context is built per client and handed to the lane pool, the HTTP/2 client
and aiohttp alike, so no backend can differ.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import httpx

from ._errors import ConfigurationError

__all__ = ["tls_context"]

TLSVerify = ssl.SSLContext | str | Path | bool


def tls_context(verify: object, *, from_env: bool = False) -> ssl.SSLContext:
    """The SSLContext for ``verify``; ``ConfigurationError`` for anything that weakens TLS."""
    if verify is False:
        raise ConfigurationError("TLS verification cannot be switched off; pass your CA instead")
    if isinstance(verify, ssl.SSLContext):
        _check_context(verify)
        if (
            not from_env
            and verify.keylog_filename is not None
            and (verify.keylog_filename == os.environ.get("SSLKEYLOGFILE"))
        ):
            _set_keylog(verify, None)  # picked up from the environment, not asked for
        return verify
    cafile: str | None = None
    capath: str | None = None
    if verify is True:
        if not (from_env and (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"))):
            context = httpx.create_ssl_context(verify=True, trust_env=False)  # certifi's bundle
            _set_keylog(context, _keylog(from_env))
            return context
        cafile = os.environ.get("SSL_CERT_FILE") or None
        capath = os.environ.get("SSL_CERT_DIR") or None
    elif isinstance(verify, str | Path):
        where = Path(verify)
        cafile, capath = (None, str(where)) if where.is_dir() else (str(where), None)
    else:
        raise ConfigurationError(
            "verify must be True, a CA bundle path or an ssl.SSLContext, "
            f"not {type(verify).__name__}"
        )
    try:
        context = ssl.create_default_context(cafile=cafile, capath=capath)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load CA bundle {cafile or capath!r}: {exc}") from None
    _set_keylog(context, _keylog(from_env))
    return context


def _keylog(from_env: bool) -> str | None:
    return (os.environ.get("SSLKEYLOGFILE") or None) if from_env else None


def _set_keylog(context: ssl.SSLContext, path: str | None) -> None:
    context.keylog_filename = path  # type: ignore[assignment]  # None switches it off


def _check_context(context: ssl.SSLContext) -> None:
    if context.verify_mode == ssl.CERT_NONE:
        raise ConfigurationError(
            "this SSLContext does not verify certificates (verify_mode=CERT_NONE); "
            "TLS verification cannot be switched off: load your CA into it instead"
        )
    if not context.check_hostname:
        raise ConfigurationError(
            "this SSLContext does not check host names (check_hostname=False); "
            "TLS verification cannot be weakened"
        )


def check_transport_tls(transport: object) -> ssl.SSLContext | None:
    """Refuse a caller's httpx transport whose SSLContext does not verify (best effort:
    httpx.AsyncHTTPTransport keeps it on its httpcore pool); the context, to watch."""
    context = getattr(getattr(transport, "_pool", None), "_ssl_context", None)
    if isinstance(context, ssl.SSLContext):
        _check_context(context)
        return context
    return None


def client_transports(http_client: object) -> list[object]:
    """The transports a caller's ``httpx.AsyncClient`` may send through: its own and
    every mount's (``mounts={"https://": ...}``)."""
    mounts = getattr(http_client, "_mounts", None)
    return [getattr(http_client, "_transport", None), *(mounts.values() if mounts else ())]


class TLSWatch:
    """The SSLContexts requests go out with, checked again before every request: one
    shared with other code (``verify=ctx``, a caller's transport) can be weakened after
    the client was built, and must then stop the request, not carry it."""

    __slots__ = ("_contexts",)

    def __init__(self, contexts: list[ssl.SSLContext | None]) -> None:
        self._contexts = tuple(dict.fromkeys(c for c in contexts if c is not None))

    def check(self) -> None:
        for context in self._contexts:
            _check_context(context)
