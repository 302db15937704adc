"""The payload codec: keys from the environment, rotation, refusal of the wrong key."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from app.temporal import data_converter
from dispatch.codec import (
    ENCODING,
    KEYS_ENV,
    CodecKeyError,
    EncryptionCodec,
    KeyRing,
    ensure_key_file,
    new_key_setting,
)

ROOT = Path(__file__).resolve().parents[1]


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


async def test_payloads_round_trip_and_the_ciphertext_hides_the_data() -> None:
    codec = EncryptionCodec(KeyRing.parse(new_key_setting("k1")))
    original = payload('{"client_email": "marlow.family@mail.example"}')
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata["encryption-key-id"] == b"k1"
    assert b"marlow" not in sealed.SerializeToString()
    [opened] = await codec.decode([sealed])
    assert opened == original


async def test_a_rotated_key_still_reads_what_the_old_one_wrote() -> None:
    old = new_key_setting("k1")
    [sealed] = await EncryptionCodec(KeyRing.parse(old)).encode([payload("before rotation")])
    rotated = EncryptionCodec(KeyRing.parse(f"{new_key_setting('k2')},{old}"))
    [opened] = await rotated.decode([sealed])
    assert opened.data == b"before rotation"
    [fresh] = await rotated.encode([payload("after rotation")])
    assert fresh.metadata["encryption-key-id"] == b"k2"


async def test_a_payload_of_a_key_we_do_not_hold_is_refused_by_name() -> None:
    [sealed] = await EncryptionCodec(KeyRing.parse(new_key_setting("k1"))).encode([payload("x")])
    stranger = EncryptionCodec(KeyRing.parse(new_key_setting("k9")))
    with pytest.raises(CodecKeyError, match="'k1'"):
        await stranger.decode([sealed])
    other_k1 = EncryptionCodec(KeyRing.parse(new_key_setting("k1")))
    with pytest.raises(CodecKeyError, match="does not decrypt"):
        await other_k1.decode([sealed])


async def test_payloads_from_before_encryption_read_as_they_are() -> None:
    codec = EncryptionCodec(KeyRing.parse(new_key_setting()))
    plain = payload('"unencrypted"')
    assert await codec.decode([plain]) == [plain]


@pytest.mark.parametrize(
    ("setting", "fault"),
    [
        ("", "is empty"),
        ("nokey", "entry 1 must be id:base64key"),
        ("bad id:AAAA", "entry 1 must be"),
        ("k1:not base64!", "'k1' is not base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "'k1' must be 32 bytes"),
    ],
)
def test_a_bad_key_setting_names_the_entry_and_never_the_key(setting: str, fault: str) -> None:
    with pytest.raises(CodecKeyError, match=fault) as caught:
        KeyRing.parse(setting)
    assert "not base64!" not in str(caught.value)


def test_a_key_id_twice_is_refused() -> None:
    key = new_key_setting("k1")
    with pytest.raises(CodecKeyError, match="appears twice"):
        KeyRing.parse(f"{key},{key}")


def test_the_key_file_is_made_once_and_only_the_owner_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "data" / "encryption.keys"
    first = ensure_key_file(path)
    assert KeyRing.parse(first).keys
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_key_file(path) == first


async def test_every_converter_encrypts_with_the_environment_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEYS_ENV, new_key_setting("env"))
    converter = data_converter()
    [encoded] = await converter.encode(["Dana & Sam Marlow"])
    assert encoded.metadata["encryption-key-id"] == b"env"
    assert await converter.decode([encoded], [str]) == ["Dana & Sam Marlow"]


@pytest.mark.parametrize("program", ["worker.py", "starter.py"])
def test_processes_refuse_to_store_client_data_in_clear(program: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (KEYS_ENV,)}
    env.pop("DISPATCH_PLAINTEXT_HISTORY", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / program)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert KEYS_ENV in done.stderr and "Traceback" not in done.stderr
