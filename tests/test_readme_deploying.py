"""README "Deploying for real" and "Audit export" name only settings the code reads, and the
search attributes the workflows write."""

from __future__ import annotations

import re
from pathlib import Path

from temporalio.envconfig import ClientConfig

from dispatch.search_attributes import ALL_KEYS

ROOT = Path(__file__).resolve().parents[1]
SDK_CONNECTION = {
    # Read by the Temporal SDK's environment configuration (app.temporal.connect loads it).
    "TEMPORAL_API_KEY",
    "TEMPORAL_PROFILE",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
}
READ_BY = ["app", "dispatch", "activities", "workflows", "deploy"]


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def project_text() -> str:
    files = [ROOT / "worker.py", ROOT / "starter.py", ROOT / "docker-compose.temporal.yml"]
    for folder in READ_BY:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yml", ".sh")]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def test_every_setting_named_is_read_by_the_code_or_the_sdk() -> None:
    named = set(
        re.findall(
            r"\b(?:DISPATCH|TEMPORAL|GRAFANA)_[A-Z_]+\b",
            section("Deploying for real") + section("Audit export"),
        )
    )
    assert named >= SDK_CONNECTION
    code = project_text()
    assert [n for n in sorted(named - SDK_CONNECTION) if n not in code] == []


def test_the_sdk_connects_with_an_api_key_or_a_client_certificate(tmp_path: Path) -> None:
    base = {"TEMPORAL_ADDRESS": "ns.acct.tmprl.cloud:7233", "TEMPORAL_NAMESPACE": "ns.acct"}
    keyed = ClientConfig.load_client_connect_config(
        override_env_vars={**base, "TEMPORAL_API_KEY": "secret"}, disable_file=True
    )
    assert (keyed.get("api_key"), keyed.get("tls")) == ("secret", True)
    (tmp_path / "c.pem").write_bytes(b"cert")
    (tmp_path / "c.key").write_bytes(b"key")
    certified = ClientConfig.load_client_connect_config(
        override_env_vars={
            **base,
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(tmp_path / "c.pem"),
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(tmp_path / "c.key"),
        },
        disable_file=True,
    )
    assert certified["namespace"] == "ns.acct"
    tls = certified.get("tls")
    assert not isinstance(tls, bool) and tls is not None
    assert (tls.client_cert, tls.client_private_key) == (b"cert", b"key")


def test_the_search_attributes_to_register_are_the_ones_the_workflows_write() -> None:
    text = section("Deploying for real")
    kinds = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    wanted = {f"{k.name}={kinds[k.indexed_value_type.name]}" for k in ALL_KEYS}
    assert set(re.findall(r'--sa "(\w+=\w+)"', text)) == wanted
    loop = re.search(r"for sa in (.*?); do", text, re.S)
    assert loop is not None
    assert set(loop.group(1).replace("\\", " ").split()) == wanted
