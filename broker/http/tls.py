"""TLS for the listener: the server context, its certificate kept in step with its files,
and the client certificate a connection presented.

cert-manager (or any rotation) replaces the certificate files in place; the context's
certificate is loaded again when they change, checked at most once a second as
connections arrive, so new connections get the new certificate without a restart. The
client CA (`BROKER_TLS_CLIENT_CA_FILE`) is read at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


class CertificateReloader:
    """Keeps the context's certificate in step with its files (checked at most once a
    second); a half-written pair is logged and the previous certificate kept."""

    def __init__(self, context: ssl.SSLContext, files: TlsFiles) -> None:
        self.context = context
        self._files = files
        self._stamp = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in (self._files.cert_file, self._files.key_file):
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
                continue
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def check(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return
        try:
            # Tried on a scratch context first: a failed load into the live one could leave
            # it holding a new certificate without its key (no handshake would succeed).
            scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            scratch.load_cert_chain(self._files.cert_file, self._files.key_file)
            self.context.load_cert_chain(self._files.cert_file, self._files.key_file)
        except (OSError, ssl.SSLError) as exc:
            # Likely caught between the two files' updates: tried again at the next check.
            log.warning("TLS certificate not reloaded", extra={"error": type(exc).__name__})
            return
        self._stamp = stamp
        log.info("TLS certificate reloaded")


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    if files.client_ca_file is not None:
        # Optional: callers with an API key or a workload JWT need no certificate.
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cafile=files.client_ca_file)
    return context


def peer_certificate(transport: asyncio.Transport) -> list[str]:
    """The verified client certificate as a one-element PEM chain ([] without one)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return []
    der = ssl_object.getpeercert(binary_form=True)
    return [ssl.DER_cert_to_PEM_cert(der)] if der else []
