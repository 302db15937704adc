"""Secrets the demo stack and the sandbox emulators agree on, and where they may be used.

The values below are public: they open nothing but the local sandbox. ``dispatch up`` fills
them in only for the connectors of the firm file that point at the sandbox, and only where the
environment leaves the variable unset, so a real deployment's secrets always win. A connector
that points at a real service must have its own secrets: a firm file that lacks them (or holds
a public demo value for them) is refused before anything starts. The secrets that authenticate
what comes *in* (the Karbon signing key, the relay secret, the Slack signing secret, the Teams
link secret) follow the connector they belong to; the relay has no address of its own, so its
secret defaults only when the whole firm runs against the sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import BaseModel

from dispatch.config import (
    FirmConfig,
    GoogleCalendarConnector,
    HarvestConnector,
    KarbonConnector,
    KarbonTimeTracker,
    OutlookCalendarConnector,
    QuickBooksTimeConnector,
    RelayConnector,
    SendGridConnector,
    SlackConnector,
    TeamsConnector,
    TogglConnector,
    WebhookCrm,
    XpmConnector,
)

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
    "DISPATCH_BOARD_SECRET": "sandbox-dispatch-board-secret-0001",
}

RELAY_SECRET_ENV = "DISPATCH_WEBHOOK_SECRET"
"""The starter reads the relay route's secret under this name, whatever the firm's PM."""
BOARD_SECRET_ENV = "DISPATCH_BOARD_SECRET"
"""Signs the web board's sign-in links and sessions (app/board_web/auth.py reads it)."""

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def demo_secret(name: str) -> str:
    """The environment's value if set, else the demo value (used by the sandbox and the demo)."""
    return os.environ.get(name) or DEMO_SECRETS[name]


def export_demo_secrets(names: list[str] | None = None) -> list[str]:
    """Fill unset variables (all, or ``names``) with demo values; return those filled.

    For tests and benchmarks, which only ever talk to a local sandbox. ``dispatch up`` uses
    :func:`plan_demo_secrets`, which looks at where each connector points first.
    """
    filled = []
    for name in names if names is not None else list(DEMO_SECRETS):
        if not os.environ.get(name):
            os.environ[name] = DEMO_SECRETS[name]
            filled.append(name)
    return filled


@dataclass(frozen=True)
class Need:
    """A secret a connector needs: any one of ``names`` will do; the first takes the demo value."""

    names: tuple[str, ...]
    demo: str


@dataclass(frozen=True)
class ConnectorUse:
    label: str
    """``chat (slack)``: how the refusal names it."""
    url: str | None
    """Where it sends requests; None when it has no address of its own (relay, Teams unset)."""
    needs: tuple[Need, ...]


class SecretsRefused(Exception):
    """A real connector lacks its secrets. One line: the variables to set, per connector."""


@dataclass
class SecretsPlan:
    fill: dict[str, str] = field(default_factory=dict)
    """Unset variables and the demo values they get (sandbox connectors only)."""
    sandbox: list[str] = field(default_factory=list)
    """Connectors that point at the sandbox."""
    missing: list[str] = field(default_factory=list)
    """``pm (karbon) at https://api.karbonhq.com needs KARBON_BEARER_TOKEN`` lines."""

    def raise_if_refused(self) -> None:
        if self.missing:
            raise SecretsRefused(
                "refusing to start: connectors that call real services need their own "
                "secrets (the sandbox's demo values are only for connectors that point at the "
                "sandbox): " + "; ".join(self.missing)
            )


def on_sandbox(url: str, sandbox_base: str) -> bool:
    """Whether ``url`` is this machine's sandbox (same port, any loopback name)."""
    given, sandbox = urlsplit(url), urlsplit(sandbox_base)
    try:
        return given.hostname in _LOCAL_HOSTS and given.port == sandbox.port
    except ValueError:  # a port that is not a number
        return False


_ADDRESSED: dict[type[BaseModel], tuple[str, str, tuple[tuple[str, str], ...]]] = {
    # connector: (label, the field holding its address, (field naming a secret, demo key)...)
    KarbonConnector: (
        "pm (karbon)",
        "base_url",
        (
            ("bearer_token_env", "KARBON_BEARER_TOKEN"),
            ("access_key_env", "KARBON_ACCESS_KEY"),
            ("webhook_signing_key_env", "KARBON_WEBHOOK_SIGNING_KEY"),
        ),
    ),
    XpmConnector: (
        "pm (xpm)",
        "base_url",
        (("access_token_env", "XERO_ACCESS_TOKEN"), ("tenant_id_env", "XERO_TENANT_ID")),
    ),
    HarvestConnector: (
        "time_tracker (harvest)",
        "base_url",
        (("access_token_env", "HARVEST_ACCESS_TOKEN"), ("account_id_env", "HARVEST_ACCOUNT_ID")),
    ),
    KarbonTimeTracker: (
        "time_tracker (karbon)",
        "base_url",
        (("bearer_token_env", "KARBON_BEARER_TOKEN"), ("access_key_env", "KARBON_ACCESS_KEY")),
    ),
    TogglConnector: ("time_tracker (toggl)", "base_url", (("api_token_env", "TOGGL_API_TOKEN"),)),
    QuickBooksTimeConnector: (
        "time_tracker (quickbooks_time)",
        "base_url",
        (("access_token_env", "QBTIME_ACCESS_TOKEN"),),
    ),
    SlackConnector: (
        "chat (slack)",
        "base_url",
        (("bot_token_env", "SLACK_BOT_TOKEN"), ("signing_secret_env", "SLACK_SIGNING_SECRET")),
    ),
    OutlookCalendarConnector: (
        "calendar (outlook)",
        "graph_base_url",
        (
            ("tenant_id_env", "MS_TENANT_ID"),
            ("client_id_env", "MS_CLIENT_ID"),
            ("client_secret_env", "MS_CLIENT_SECRET"),
        ),
    ),
    SendGridConnector: ("email (sendgrid)", "base_url", (("api_key_env", "SENDGRID_API_KEY"),)),
    WebhookCrm: ("crm (webhook)", "url", (("secret_env", "CRM_WEBHOOK_SECRET"),)),
}


def connector_uses(
    config: FirmConfig, sandbox_base: str, environ: Mapping[str, str]
) -> list[ConnectorUse]:
    """Every configured connector, where it points and the secrets it needs."""
    c = config.connectors
    uses: list[ConnectorUse] = []
    for connector in (c.pm, c.time_tracker, c.chat, c.calendar, c.email, c.crm):
        known = _ADDRESSED.get(type(connector))
        if known is not None:
            label, address, secrets = known
            needs = tuple(
                Need((getattr(connector, name),), DEMO_SECRETS[demo]) for name, demo in secrets
            )
            uses.append(ConnectorUse(label, getattr(connector, address), needs))
        elif isinstance(connector, RelayConnector):
            relay = Need((RELAY_SECRET_ENV,), DEMO_SECRETS[RELAY_SECRET_ENV])
            uses.append(ConnectorUse("pm (relay)", None, (relay,)))
        elif isinstance(connector, TeamsConnector):
            # The channel's address is itself a secret: it says where the connector points.
            channel = sandbox_base + urlsplit(DEMO_SECRETS["TEAMS_WEBHOOK_URL"]).path
            needs = (
                Need((connector.webhook_url_env,), channel),
                Need((connector.link_secret_env,), DEMO_SECRETS["DISPATCH_LINK_SECRET"]),
            )
            uses.append(ConnectorUse("chat (teams)", environ.get(connector.webhook_url_env), needs))
        elif isinstance(connector, GoogleCalendarConnector):
            # A bearer token, or a service-account key file: either one will do.
            token = Need(
                ("GOOGLE_ACCESS_TOKEN", connector.credentials_file_env),
                DEMO_SECRETS["GOOGLE_ACCESS_TOKEN"],
            )
            uses.append(ConnectorUse("calendar (google)", connector.api_endpoint, (token,)))
    return uses


def plan_demo_secrets(
    config: FirmConfig, sandbox_base: str, environ: Mapping[str, str]
) -> SecretsPlan:
    """Which unset secrets get demo values, and which real connectors lack their own."""
    uses = connector_uses(config, sandbox_base, environ)
    addressed = [u for u in uses if u.url is not None]
    all_sandbox = bool(addressed) and all(on_sandbox(u.url or "", sandbox_base) for u in addressed)
    plan = SecretsPlan()
    for use in uses:
        # Without an address of its own a connector follows the firm: sandbox only if all is.
        sandbox = on_sandbox(use.url, sandbox_base) if use.url is not None else all_sandbox
        if sandbox:
            plan.sandbox.append(use.label)
            for need in use.needs:
                if not any(environ.get(name) for name in need.names):
                    plan.fill[need.names[0]] = need.demo
            continue
        lacking = [
            " or ".join(need.names)
            + (" (set to the public sandbox value)" if _holds_demo(need, environ) else "")
            for need in use.needs
            if _holds_demo(need, environ) or not any(environ.get(n) for n in need.names)
        ]
        if lacking:
            where = f" at {use.url}" if use.url else ""
            if use.url and urlsplit(use.url).hostname in _LOCAL_HOSTS:
                where += f" (local, but not this stack's sandbox at {sandbox_base})"
            plan.missing.append(f"{use.label}{where} needs {', '.join(lacking)}")
    if all_sandbox and not environ.get(RELAY_SECRET_ENV):
        # The relay route is open whatever the PM; on an all-sandbox firm it can only ever
        # reach the sandbox, so the demo may use it.
        plan.fill.setdefault(RELAY_SECRET_ENV, DEMO_SECRETS[RELAY_SECRET_ENV])
    if all_sandbox and not environ.get(BOARD_SECRET_ENV):
        # The board shows only what the sandbox firm holds; a real firm sets its own secret.
        plan.fill.setdefault(BOARD_SECRET_ENV, DEMO_SECRETS[BOARD_SECRET_ENV])
    elif not all_sandbox and environ.get(BOARD_SECRET_ENV) == DEMO_SECRETS[BOARD_SECRET_ENV]:
        plan.missing.append(
            f"the web board needs {BOARD_SECRET_ENV} (set to the public sandbox value)"
        )
    return plan


def _holds_demo(need: Need, environ: Mapping[str, str]) -> bool:
    public = set(DEMO_SECRETS.values()) | {need.demo}
    return any(environ.get(name) in public for name in need.names)
