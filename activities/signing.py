"""HMAC-SHA256 over raw request bodies, for the webhooks we receive and the ones we send.

Used for Karbon's ``Signature`` header (bare hex), our ``X-Dispatch-Signature`` (``sha256=<hex>``)
and the CRM webhook we sign. Always sign and verify the exact bytes on the wire: re-serialising
JSON changes whitespace and key order, and the signature with it.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_PREFIX = "sha256="


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``body`` keyed with the UTF-8 bytes of ``secret``."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_hex_signature(
    secret: str, body: bytes, given: str, *, allow_prefix: bool = False
) -> bool:
    """True when ``given`` is the hex HMAC of ``body``; case-insensitive, constant-time.

    With ``allow_prefix`` a leading ``sha256=`` is accepted (and ignored). An empty secret never
    verifies anything, so a missing configuration cannot turn into "accept every request".
    """
    if not secret or not given:
        return False
    candidate = given.strip()
    if allow_prefix and candidate[: len(SIGNATURE_PREFIX)].lower() == SIGNATURE_PREFIX:
        candidate = candidate[len(SIGNATURE_PREFIX) :]
    expected = hmac_sha256_hex(secret, body)
    # compare_digest on str requires ASCII; a non-ASCII header is simply a mismatch.
    if not candidate.isascii():
        return False
    return hmac.compare_digest(expected, candidate.lower())


def dispatch_signature_header(secret: str, body: bytes) -> str:
    """The ``X-Dispatch-Signature`` value for ``body``: ``sha256=<lowercase hex>``."""
    return SIGNATURE_PREFIX + hmac_sha256_hex(secret, body)
