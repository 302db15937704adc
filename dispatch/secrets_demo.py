"""Secrets the demo stack and the sandbox emulators agree on when the environment sets none.

They open nothing but the local sandbox. ``dispatch up`` exports them only for variables the
environment leaves unset, so a real deployment's secrets always win.
"""

from __future__ import annotations

import os

DEMO_SECRETS: dict[str, str] = {
    "KARBON_BEARER_TOKEN": "5f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e",
    "KARBON_ACCESS_KEY": "eyJzYW5kYm94IjoiYWNjZXNzLWtleSJ9.c2FuZGJveA.c2lnbmF0dXJl",
    "KARBON_WEBHOOK_SIGNING_KEY": "sandbox-karbon-signing-key-0001",
    "DISPATCH_WEBHOOK_SECRET": "sandbox-dispatch-webhook-secret",
    "HARVEST_ACCESS_TOKEN": "sandbox-harvest-personal-access-token",
    "HARVEST_ACCOUNT_ID": "1002003",
    "SLACK_BOT_TOKEN": "xoxb-sandbox-0000-bot-token",
    "SLACK_SIGNING_SECRET": "sandbox-slack-signing-secret",
    "SENDGRID_API_KEY": "SG.sandbox-key.sandbox-secret",
    "GOOGLE_ACCESS_TOKEN": "ya29.sandbox-google-access-token",
    "CRM_WEBHOOK_SECRET": "sandbox-crm-webhook-secret",
    "DISPATCH_LINK_SECRET": "sandbox-dispatch-link-secret",
    "XERO_ACCESS_TOKEN": "sandbox-xero-access-token",
    "XERO_TENANT_ID": "6e1c4a52-0b9d-4c1e-9d6f-2a7b3c4d5e6f",
    "TOGGL_API_TOKEN": "sandbox0toggl0api0token00000000",
    "QBTIME_ACCESS_TOKEN": "S.sandbox-quickbooks-time-token",
    "TEAMS_WEBHOOK_URL": "http://127.0.0.1:8100/teams/workflows/dispatch-channel",
    "MS_TENANT_ID": "0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f",
    "MS_CLIENT_ID": "sandbox-graph-client-id",
    "MS_CLIENT_SECRET": "sandbox-graph-client-secret",
}


def demo_secret(name: str) -> str:
    """The environment's value if set, else the demo value (used by the sandbox and the demo)."""
    return os.environ.get(name) or DEMO_SECRETS[name]


def export_demo_secrets() -> list[str]:
    """Fill unset variables with demo values; return the names that were filled."""
    filled = []
    for name, value in DEMO_SECRETS.items():
        if not os.environ.get(name):
            os.environ[name] = value
            filled.append(name)
    return filled
