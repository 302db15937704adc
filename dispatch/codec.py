"""Client data encrypted in Temporal history: an AES-GCM payload codec with key rotation.

Every payload the clients, workers, test environments and replayers send to Temporal passes
through ``EncryptionCodec`` (see ``app.temporal.data_converter``): engagement details,
client names and emails, scope text, decisions, timelines, static summaries. What the server
stores, and what ``temporal workflow show`` prints, is ciphertext; the Web UI shows it decoded
through the webhook server's codec endpoint (``POST /codec/decode``), which holds the keys.

Keys come from ``DISPATCH_ENCRYPTION_KEYS``: ``id:base64key[,id:base64key...]``, each key 32
random bytes (AES-256). The first is the one new payloads are encrypted with; the others are
still read, so a key is rotated by putting a new one first and keeping the old ones until
every workflow that used them has closed (README "Encryption"). Each payload names its key id,
so nothing else is needed to decrypt it, and a payload that is not encrypted (histories from
before encryption was on) passes through unchanged.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

KEYS_ENV = "DISPATCH_ENCRYPTION_KEYS"
ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CodecKeyError(ValueError):
    """The key setting is unusable, or a payload names a key this process does not have."""


@dataclass(frozen=True)
class KeyRing:
    """Keys by id; ``active`` encrypts, every key decrypts."""

    active: str
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, setting: str) -> KeyRing:
        """``id:base64key,...`` -> KeyRing; the error names the entry at fault, never a key."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for n, entry in enumerate(part.strip() for part in setting.split(",") if part.strip()):
            key_id, sep, encoded = entry.partition(":")
            if not sep or not _KEY_ID.match(key_id):
                raise CodecKeyError(
                    f"{KEYS_ENV}: entry {n + 1} must be id:base64key with an id of letters, "
                    "digits, '.', '_' or '-'"
                )
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise CodecKeyError(f"{KEYS_ENV}: key {key_id!r} is not base64") from None
            if len(key) != 32:
                raise CodecKeyError(f"{KEYS_ENV}: key {key_id!r} must be 32 bytes (AES-256)")
            if key_id in keys:
                raise CodecKeyError(f"{KEYS_ENV}: key id {key_id!r} appears twice")
            keys[key_id] = key
            order.append(key_id)
        if not order:
            raise CodecKeyError(f"{KEYS_ENV} is empty")
        return cls(active=order[0], keys=keys)

    @classmethod
    def from_env(cls) -> KeyRing | None:
        setting = os.environ.get(KEYS_ENV, "").strip()
        return cls.parse(setting) if setting else None


def new_key_setting(key_id: str | None = None) -> str:
    """A fresh ``id:base64key`` entry (what ``dispatch up`` writes to .data/ on first run)."""
    key_id = key_id or f"k{secrets.token_hex(4)}"
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def ensure_key_file(path: Path) -> str:
    """The key setting stored at ``path``, created (owner-only) when missing."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    setting = new_key_setting()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(setting + "\n")
    return setting


class EncryptionCodec(PayloadCodec):
    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self._ring.active
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on: readable as it is
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecKeyError(
                f"a payload is encrypted with key {key_id!r}, which is not in {KEYS_ENV}"
            )
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise CodecKeyError(
                f"a payload encrypted with key {key_id!r} does not decrypt (damaged, or a "
                "different key under the same id)"
            ) from None
        return Payload.FromString(plain)


__all__ = [
    "ENCODING",
    "KEYS_ENV",
    "CodecKeyError",
    "EncryptionCodec",
    "KeyRing",
    "ensure_key_file",
    "new_key_setting",
]
