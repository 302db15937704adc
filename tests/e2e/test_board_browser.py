"""The board in a real browser: Debian's Chromium (``make browser``) driven by Playwright.

The stack runs as ``dispatch up`` runs it (dev server, sandbox, webhook server, worker). A
partner opens the board from a sign-in link, sees the engagements, assigns a partner-review
item to one of its candidates, and watches the engagement become assigned.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from app.board_web import signin_link
from app.board_web.auth import BASE_URL_ENV, SECRET_ENV
from app.stack import Stack
from app.temporal import connect
from dispatch.config import load_firm_config
from dispatch.models import DispatchStatus, EngagementState
from tests.e2e.drive import (
    free_ports,
    new_work_item,
    sandbox_firm_file,
    send_inserted,
    settled,
    state_of,
)
from tests.harness import eventually, story

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "browser-test-board-secret-0123456789"

if not CHROMIUM.exists():  # pragma: no cover - `make test` installs it first (`make browser`)
    message = (
        f"THE BOARD'S BROWSER TEST IS SKIPPED: {CHROMIUM} is missing. "
        "Run `make browser` (installs Debian's chromium), then `make test`."
    )
    warnings.warn(message, stacklevel=1)
    pytest.skip(message, allow_module_level=True)

from playwright.async_api import async_playwright, expect  # noqa: E402


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data = tmp_path_factory.mktemp("board-stack")
    ports = free_ports()
    firm_file = sandbox_firm_file(data, ports)
    saved = {name: os.environ.get(name) for name in (SECRET_ENV, BASE_URL_ENV)}
    os.environ[SECRET_ENV] = SECRET
    os.environ[BASE_URL_ENV] = f"http://127.0.0.1:{ports.starter}"
    running = Stack(load_firm_config(firm_file), firm_file, root=ROOT, ports=ports, data=data)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def test_a_partner_assigns_from_the_board_in_a_browser(stack: Stack) -> None:
    # The demo's story in small: one that fits, one nobody has room for by its date.
    fits = await new_work_item(
        stack, "2026 1120-S - Bayside Dental Group", "cl-bayside-dental", "Tax Return - S Corp", 15
    )
    tight = await new_work_item(
        stack, "Audit preparation - Northwind Logistics", "cl-northwind", "Audit Preparation", 2
    )
    ids = []
    for key in (fits, tight):
        response = await send_inserted(stack, key)
        assert response.status_code == 202, response.text
        ids.append(response.json()["workflow_id"])
    fits_id, tight_id = ids

    async def waiting() -> bool | None:
        try:
            state = await state_of(stack, tight_id)
        except Exception:
            return None
        return True if state.status is DispatchStatus.NEEDS_PARTNER_REVIEW else None

    await eventually(waiting, timeout=90, what="the audit to wait for a partner")

    link = signin_link(stack.config, stack.config.escalation.managing_partner, datetime.now(UTC))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            # A phone-sized window: the board must be usable there too.
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            await page.goto(link)
            await page.get_by_role("button", name=re.compile("Open the board as")).click()
            await expect(page).to_have_url(re.compile(r"/board$"))

            # The list: both engagements, each with its status (visibility is eventually
            # consistent; the page refreshes itself).
            row = page.locator(f'#engagements tr[data-workflow="{fits_id}"]')
            await expect(row).to_be_visible(timeout=30_000)
            item = page.locator(f'#queue article[data-workflow="{tight_id}"]')
            await expect(item).to_be_visible(timeout=30_000)
            await expect(page.locator("#capacity table.heat")).to_be_visible()

            # Its candidates, why each is blocked, and the partner's buttons: the first person
            # only capacity blocks ("Assign <name> anyway"), booked over capacity, explicitly.
            pick = item.locator("form.act button.danger").first
            await expect(pick).to_be_visible(timeout=30_000)
            await expect(item.locator(".blocked").first).to_contain_text("blocked:")
            chosen = (await pick.inner_text()).removeprefix("Assign ").removesuffix(" anyway")
            await pick.click()

            # The engagement's page: the outcome, then the status turns to Assigned.
            await expect(page).to_have_url(re.compile(rf"/board/e/{re.escape(tight_id)}"))
            await expect(page.locator("#status")).to_have_text("Assigned", timeout=60_000)
            await expect(page.locator("#preparer")).to_contain_text(chosen)
            await expect(page.locator(".timeline")).to_contain_text("partner decision")
        finally:
            await browser.close()

    seen: list[EngagementState] = []

    async def assigned() -> bool | None:
        seen[:] = [await state_of(stack, tight_id)]
        state = seen[0]
        return True if state.status is DispatchStatus.ASSIGNED and state.reviewer else None

    # The reviewer follows the preparer; the engagement stays assigned to the partner's pick.
    await eventually(
        assigned,
        timeout=60,
        what="the reviewer to be assigned too",
        last=lambda: story(seen[0]) if seen else "nothing",
    )
    state = await state_of(stack, tight_id)
    assert state.preparer is not None and state.preparer.name == chosen


async def test_the_web_ui_shows_encrypted_payloads_decoded_through_the_codec(stack: Stack) -> None:
    # History holds ciphertext; the Web UI that `dispatch up` starts asks the webhook server's
    # codec endpoint to decode it in the browser (CORS for the UI's own port).
    key = await new_work_item(
        stack,
        "2026 1120-S review - Bayside Dental Group",
        "cl-bayside-dental",
        "Tax Return - S Corp",
        15,
    )
    response = await send_inserted(stack, key)
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    await settled(stack, workflow_id, timeout=90)
    client = await connect(stack.temporal_address)
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    assert stack.ui_url is not None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1366, "height": 900})
            decoded: list[int] = []
            page.on(
                "response",
                lambda r: decoded.append(r.status) if "/codec/decode" in r.url else None,
            )
            await page.goto(
                f"{stack.ui_url}/namespaces/default/workflows/{workflow_id}/{run_id}/history"
            )
            # The input's field names are inside the ciphertext: readable only once decoded.
            await expect(page.get_by_text('"external_id"').first).to_be_visible(timeout=60_000)
            assert decoded and all(status == 200 for status in decoded), decoded
            await expect(page.get_by_text("binary/encrypted")).to_have_count(0)
        finally:
            await browser.close()
