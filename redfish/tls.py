"""TLS settings for Redfish clients: one ``ssl.SSLContext`` per trust setting, fleet-wide.

An SSLContext holds the parsed CA store (the system bundle is hundreds of certificates), so
building one per BMC would cost milliseconds of CPU and a few hundred kB each. The agent's
nodes share a handful of ``redfish_verify_ca`` values; :func:`tls_context` caches one
context per value.
"""

from __future__ import annotations

import functools
import os
import ssl

from redfish.errors import TLSError

VerifySetting = bool | str  # Ironic's redfish_verify_ca: True, False, or a CA file path


@functools.lru_cache(maxsize=32)
def _context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        context = ssl.create_default_context()
    else:
        try:
            context = ssl.create_default_context(cafile=verify)
        except FileNotFoundError:
            raise TLSError(f"CA file {verify} does not exist") from None
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"CA file {verify} is not a readable PEM file: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # what httpx would set; once, not per BMC
    return context


def tls_context(verify: VerifySetting = True) -> ssl.SSLContext:
    """The shared client context for a trust setting (cached; errors are not)."""
    if isinstance(verify, str):
        if not verify:
            raise ValueError("verify: an empty CA file path (use True, False or a path)")
        verify = os.path.abspath(verify)  # one context per file, however it is spelled
    elif not isinstance(verify, bool):
        raise TypeError("verify must be True, False or a CA file path")
    return _context(verify)


def describe_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError somewhere in an exception's cause/context chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# OpenSSL verify codes for "nobody we trust signed this": 18 self-signed leaf, 19 self-signed
# root in the chain, 20 issuer unknown (a private CA such as a BMC vendor's or the sim's).
_PRIVATE_CA_CODES = frozenset({18, 19, 20})


def failure_message(peer: str, error: ssl.SSLError, verify: VerifySetting) -> str:
    """One line saying what failed and how to fix it."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or "certificate not trusted"
        if error.verify_code in _PRIVATE_CA_CODES:
            reason += ": the certificate is self-signed or from a private CA"
        if verify is True:
            fix = (
                'give the BMC\'s CA file (redfish_verify_ca = "/path/ca.pem"), '
                "or redfish_verify_ca = false to skip verification"
            )
        else:
            fix = f"the CA file {verify} does not vouch for it"
        return f"{peer}: TLS certificate not trusted ({reason}): {fix}"
    return f"{peer}: TLS handshake failed: {error.reason or error}"
