"""Demo secrets stay near the sandbox.

The sandbox's public values are filled in only for connectors that point at the sandbox; a
connector that calls a real service needs its own secrets (a public value does not count), or
``dispatch up`` refuses to start with one line naming the variables. The secrets that
authenticate incoming requests follow the connector they belong to.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from activities.signing import dispatch_signature_header, hmac_sha256_hex
from app.demo import in_sandbox
from app.secrets_demo import DEMO_SECRETS, SecretsRefused, on_sandbox, plan_demo_secrets
from app.stack import Ports, Stack
from dispatch.config import FirmConfig, TeamsConnector, WebhookCrm, load_firm_config
from tests.sandbox_server import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "firms"
SANDBOX = "http://127.0.0.1:8100"
STARTER = "http://127.0.0.1:8000"

REAL_SECRETS = {
    "KARBON_BEARER_TOKEN": "real-karbon-bearer",
    "KARBON_ACCESS_KEY": "real-karbon-access-key",
    "KARBON_WEBHOOK_SIGNING_KEY": "real-karbon-signing-key-0123456789",
    "HARVEST_ACCESS_TOKEN": "real-harvest-token",
    "HARVEST_ACCOUNT_ID": "777",
    "SLACK_BOT_TOKEN": "xoxb-real",
    "SLACK_SIGNING_SECRET": "real-slack-signing-secret",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/google.json",
    "SENDGRID_API_KEY": "SG.real",
    "CRM_WEBHOOK_SECRET": "real-crm-secret",
}


def real_secrets(*without: str) -> dict[str, str]:
    return {k: v for k, v in REAL_SECRETS.items() if k not in without}


def example(name: str) -> FirmConfig:
    return load_firm_config(EXAMPLES / name)


def crm_on_sandbox(config: FirmConfig) -> FirmConfig:
    """The issue's firm: everything real but the CRM, which points at the sandbox."""
    crm = WebhookCrm(kind="webhook", url=f"{SANDBOX}/crm/records")
    connectors = config.connectors.model_copy(update={"crm": crm})
    return config.model_copy(update={"connectors": connectors})


def test_the_demo_twin_gets_every_demo_secret_it_needs() -> None:
    plan = plan_demo_secrets(in_sandbox(example("default.yaml"), SANDBOX, STARTER), SANDBOX, {})
    assert not plan.missing
    expected = {
        name: DEMO_SECRETS[name]
        for name in (
            "KARBON_BEARER_TOKEN",
            "KARBON_ACCESS_KEY",
            "KARBON_WEBHOOK_SIGNING_KEY",
            "HARVEST_ACCESS_TOKEN",
            "HARVEST_ACCOUNT_ID",
            "SLACK_BOT_TOKEN",
            "SLACK_SIGNING_SECRET",
            "GOOGLE_ACCESS_TOKEN",
            "SENDGRID_API_KEY",
            "CRM_WEBHOOK_SECRET",
            "DISPATCH_WEBHOOK_SECRET",  # the whole firm is on the sandbox
            "DISPATCH_BOARD_SECRET",  # so is the board's sign-in
        )
    }
    assert plan.fill == expected


def test_a_real_firm_with_only_the_crm_on_the_sandbox_gets_only_the_crm_demo_secret() -> None:
    environ = real_secrets("CRM_WEBHOOK_SECRET")
    plan = plan_demo_secrets(crm_on_sandbox(example("default.yaml")), SANDBOX, environ)
    assert not plan.missing
    assert plan.fill == {"CRM_WEBHOOK_SECRET": DEMO_SECRETS["CRM_WEBHOOK_SECRET"]}
    assert plan.sandbox == ["crm (webhook)"]


def test_a_mixed_firm_without_its_real_secrets_is_refused_naming_each_variable() -> None:
    plan = plan_demo_secrets(crm_on_sandbox(example("default.yaml")), SANDBOX, {})
    with pytest.raises(SecretsRefused) as refused:
        plan.raise_if_refused()
    message = str(refused.value)
    assert "\n" not in message
    for name in [*real_secrets("CRM_WEBHOOK_SECRET"), "GOOGLE_ACCESS_TOKEN"]:
        assert name in message
    assert "CRM_WEBHOOK_SECRET" not in message
    assert "pm (karbon) at https://api.karbonhq.com" in message


def test_a_public_demo_value_does_not_count_as_a_real_secret() -> None:
    # Exported in the shell to try the sandbox by hand, then a real firm started.
    environ = {
        **real_secrets("CRM_WEBHOOK_SECRET"),
        "SLACK_SIGNING_SECRET": DEMO_SECRETS["SLACK_SIGNING_SECRET"],
    }
    plan = plan_demo_secrets(crm_on_sandbox(example("default.yaml")), SANDBOX, environ)
    assert plan.missing == [
        "chat (slack) at https://slack.com/api/ needs SLACK_SIGNING_SECRET "
        "(set to the public sandbox value)"
    ]


def test_signing_secrets_follow_their_connector() -> None:
    # Slack on the sandbox, Karbon real: the Slack signing secret may be the demo one, the
    # Karbon signing key and the relay secret never.
    config = example("default.yaml")
    slack = config.connectors.chat.model_copy(update={"base_url": f"{SANDBOX}/slack/api/"})
    config = config.model_copy(
        update={"connectors": config.connectors.model_copy(update={"chat": slack})}
    )
    environ = real_secrets("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
    plan = plan_demo_secrets(config, SANDBOX, environ)
    assert not plan.missing
    assert plan.fill == {
        "SLACK_BOT_TOKEN": DEMO_SECRETS["SLACK_BOT_TOKEN"],
        "SLACK_SIGNING_SECRET": DEMO_SECRETS["SLACK_SIGNING_SECRET"],
    }


def test_the_relay_secret_defaults_only_when_the_whole_firm_is_on_the_sandbox() -> None:
    relay_firm = example("taxdome-toggl-slack.yaml")
    twin = plan_demo_secrets(in_sandbox(relay_firm, SANDBOX, STARTER), SANDBOX, {})
    assert twin.fill["DISPATCH_WEBHOOK_SECRET"] == DEMO_SECRETS["DISPATCH_WEBHOOK_SECRET"]

    mixed = plan_demo_secrets(crm_on_sandbox(relay_firm), SANDBOX, {})
    assert "DISPATCH_WEBHOOK_SECRET" not in mixed.fill
    assert any(
        line.startswith("pm (relay) needs DISPATCH_WEBHOOK_SECRET") for line in mixed.missing
    )


def test_the_board_secret_defaults_on_the_sandbox_and_its_demo_value_is_refused_elsewhere() -> None:
    mixed = plan_demo_secrets(crm_on_sandbox(example("default.yaml")), SANDBOX, {})
    assert "DISPATCH_BOARD_SECRET" not in mixed.fill

    environ = {
        **real_secrets("CRM_WEBHOOK_SECRET"),
        "DISPATCH_BOARD_SECRET": DEMO_SECRETS["DISPATCH_BOARD_SECRET"],
    }
    plan = plan_demo_secrets(crm_on_sandbox(example("default.yaml")), SANDBOX, environ)
    assert plan.missing == [
        "the web board needs DISPATCH_BOARD_SECRET (set to the public sandbox value)"
    ]


def test_teams_points_where_its_webhook_url_says() -> None:
    sandbox = "http://127.0.0.1:18100"
    twin = in_sandbox(example("xpm-quickbooks-teams-outlook.yaml"), sandbox, STARTER)
    assert isinstance(twin.connectors.chat, TeamsConnector)
    plan = plan_demo_secrets(twin, sandbox, {})
    assert not plan.missing
    # The channel is this stack's sandbox, whatever its port.
    assert plan.fill["TEAMS_WEBHOOK_URL"] == (
        "http://127.0.0.1:18100/teams/workflows/dispatch-channel"
    )
    assert plan.fill["DISPATCH_LINK_SECRET"] == DEMO_SECRETS["DISPATCH_LINK_SECRET"]

    real_channel = {"TEAMS_WEBHOOK_URL": "https://prod.example.logic.azure.com/workflows/1"}
    plan = plan_demo_secrets(twin, sandbox, real_channel)
    assert "DISPATCH_LINK_SECRET" not in plan.fill
    assert plan.missing == [
        "chat (teams) at https://prod.example.logic.azure.com/workflows/1 needs "
        "DISPATCH_LINK_SECRET"
    ]


def test_a_firm_that_never_touches_the_sandbox_gets_no_demo_value() -> None:
    plan = plan_demo_secrets(example("default.yaml"), SANDBOX, REAL_SECRETS)
    assert plan.fill == {} and plan.sandbox == [] and plan.missing == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8100/karbon", True),
        ("http://localhost:8100/crm/records", True),
        ("http://127.0.0.1:8101/karbon", False),
        ("https://api.karbonhq.com", False),
        ("http://127.0.0.1:8100.evil.example/karbon", False),
    ],
)
def test_on_sandbox_is_the_sandbox_host_and_port(url: str, expected: bool) -> None:
    assert on_sandbox(url, SANDBOX) is expected


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any secret (the suite exports the demo ones)."""
    keep = {k: v for k, v in os.environ.items() if k not in DEMO_SECRETS}
    keep.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    return {**keep, **extra}


def test_dispatch_up_refuses_a_mixed_firm_in_one_line_before_starting_anything(
    tmp_path: Path,
) -> None:
    firm = tmp_path / "mixed.yaml"
    config = crm_on_sandbox(example("default.yaml"))
    firm.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "up", "--firm", str(firm), "--data", str(data)],
        capture_output=True,
        text=True,
        env=clean_env(KARBON_BEARER_TOKEN=DEMO_SECRETS["KARBON_BEARER_TOKEN"]),
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    out = (result.stdout + result.stderr).strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert out.startswith("refusing to start:")
    assert "KARBON_BEARER_TOKEN (set to the public sandbox value)" in out
    assert "SENDGRID_API_KEY" in out and "CRM_WEBHOOK_SECRET" not in out
    assert not data.exists()  # no dev server, no logs: nothing was started


async def test_the_webhook_server_of_a_mixed_firm_refuses_requests_signed_with_demo_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's own environment, given to the real webhook server."""
    for name in [*DEMO_SECRETS, "GOOGLE_APPLICATION_CREDENTIALS"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in real_secrets("CRM_WEBHOOK_SECRET").items():
        monkeypatch.setenv(name, value)
    firm = tmp_path / "mixed.yaml"
    config = crm_on_sandbox(example("default.yaml"))
    firm.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))
    ports = Ports(temporal=free_port(), ui=free_port(), starter=free_port(), sandbox=8100)
    stack = Stack(config, firm, root=ROOT, ports=ports, data=tmp_path)
    assert stack.check_secrets()  # the CRM is on the sandbox
    stack.temporal_address = f"localhost:{ports.temporal}"  # never reached: refused before
    env = stack.child_env()
    assert env["CRM_WEBHOOK_SECRET"] == DEMO_SECRETS["CRM_WEBHOOK_SECRET"]
    assert "DISPATCH_WEBHOOK_SECRET" not in env
    try:
        await stack.start_starter()
        async with httpx.AsyncClient(timeout=10) as http:
            body = b'{"ResourcePermaKey":"4Zk9","ResourceType":"Work","ActionType":"Inserted"}'
            demo_signed = hmac_sha256_hex(DEMO_SECRETS["KARBON_WEBHOOK_SIGNING_KEY"], body)
            karbon = await http.post(
                f"{stack.starter_url}/webhooks/karbon",
                content=body,
                headers={"Signature": demo_signed, "Content-Type": "application/json"},
            )
            assert karbon.status_code == 401
            relay_signature = dispatch_signature_header(
                DEMO_SECRETS["DISPATCH_WEBHOOK_SECRET"], b"{}"
            )
            relay = await http.post(
                f"{stack.starter_url}/webhooks/engagements",
                content=b"{}",
                headers={"X-Dispatch-Signature": relay_signature},
            )
            # No relay secret at all on this firm: nothing signed with the demo one gets in.
            assert relay.status_code in (401, 503), relay.text
    finally:
        await stack.stop()


def test_a_local_address_that_is_not_this_stacks_sandbox_is_not_the_sandbox() -> None:
    # The demo firm names :8100; a stack whose sandbox runs elsewhere must not trust it.
    plan = plan_demo_secrets(load_firm_config(), "http://127.0.0.1:18100", {})
    assert plan.fill == {} and plan.sandbox == []
    assert "(local, but not this stack's sandbox at http://127.0.0.1:18100)" in plan.missing[0]
