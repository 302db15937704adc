"""The board's web pages, served by the webhook server under ``/board``.

Pages are rendered on the server (Jinja2); a small script of ours (``static/board.js``)
refreshes the live part of a page every few seconds and fills each partner-review item's
candidates. Nothing is shown without a session (``auth``); the partner's actions go through
the same Updates, with the same authorization, as the Slack buttons and date picker
(``deliver_decision``, ``deliver_due_move``):
the workflow's validator refuses anyone but a deciding partner, and the page refuses them
first (403) so nothing is even sent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from app import audit, board
from app.board_web.auth import (
    COOKIE,
    SESSION_TTL,
    BoardAuthError,
    Claims,
    NotAllowed,
    UsedLinks,
    board_secret,
    csrf_ok,
    csrf_token,
    may_sign_in,
    sign,
    verify,
)
from app.links import read_form
from app.responses import (
    RPC_TIMEOUT,
    Refused,
    ServiceUnavailable,
    UnknownEngagement,
    bounded,
    deliver_decision,
    deliver_due_move,
)
from dispatch import limits
from dispatch.config import FirmConfig
from dispatch.ids import is_engagement_workflow_id
from dispatch.models import (
    CandidateScore,
    DispatchStatus,
    DueDateMove,
    EngagementState,
    PartnerDecision,
    ResponseOutcome,
)
from dispatch.partner_review import blocked_reason, only_capacity, partner_candidates
from workflows.engagement import EngagementWorkflow

log = logging.getLogger("app.board")

HERE = Path(__file__).parent
STATIC = {"board.js": "text/javascript", "board.css": "text/css"}
REFRESH_SECONDS = 5
_EVENT = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
"""The sign-in token is in a URL: no caching, no Referer to anyone else, no indexing, no
framing. (``same-origin``, not ``no-referrer``: under the latter browsers send ``Origin: null``
with our own forms, and the origin check could not tell them from a sandboxed frame's.)"""

ClientSource = Callable[[], Awaitable[Client]]
PartnerAction = Callable[[Client], Awaitable[ResponseOutcome]] | tuple[str, str]
"""The Update to send, or the form field that is wrong and why."""
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their session, and what the page may let them do."""

    claims: Claims
    name: str
    partner: bool
    csrf: str


@dataclass(frozen=True)
class CandidateView:
    staff_id: str
    name: str
    tier: str
    available_hours: float
    blocked: str
    total: float | None
    scores: dict[str, float]
    anyway: bool
    """Only capacity blocks them: the action books them over capacity, explicitly."""


def candidates_of(state: EngagementState, limit: int | None = None) -> list[CandidateView]:
    """The partner's choices, as every surface orders them (``dispatch.partner_review``)."""
    return [_candidate(c) for c in partner_candidates(state.decisions, limit)]


def _candidate(c: CandidateScore) -> CandidateView:
    return CandidateView(
        staff_id=c.staff_id,
        name=c.name,
        tier=c.tier.value,
        available_hours=round(c.available_hours, 1),
        blocked=blocked_reason(c),
        total=c.total,
        scores=c.scores,
        anyway=only_capacity(c),
    )


def queue_event(key: str, claims: Claims, row: board.EngagementRow) -> str:
    """A queue item's event token: the same on every refresh of the page (so the live part
    only changes when the queue does), new for each request the engagement makes, and the
    session's own (the Update id names the partner too)."""
    text = f"queue-event:{claims.nonce}:{row.workflow_id}:{row.review_round}"
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()[:40]


def create_board_router(
    config: FirmConfig,
    temporal: ClientSource,
    *,
    task_queue: str | None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> APIRouter:
    router = APIRouter(prefix="/board", include_in_schema=False)
    used = UsedLinks()
    zone = ZoneInfo(config.firm.time_zone)
    firm = config.firm.name
    partners = set(config.deciding_partners)

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = _env.get_template(template).render(firm=firm, **context)
        return HTMLResponse(body, status_code=status, headers=_HEADERS)

    def message(status: int, title: str, text: str, viewer: Viewer | None = None) -> HTMLResponse:
        return page("message.html", status, title=title, text=text, viewer=viewer)

    def today() -> date:
        return clock().astimezone(zone).date()

    def viewer_of(request: Request) -> Viewer | HTMLResponse:
        key = board_secret()
        if key is None:
            log.warning("the board is disabled: DISPATCH_BOARD_SECRET is not set")
            return message(503, "The board is not set up", "Ask the operator to set it up.")
        try:
            claims = verify(key, "session", request.cookies.get(COOKIE, ""), clock())
            member = may_sign_in(config, claims.staff_id)
        except (BoardAuthError, NotAllowed):
            return message(
                401,
                "Please sign in",
                "Open the board from the link the dispatch bot sends you (/board in Slack), "
                "or ask the operator for one.",
            )
        return Viewer(claims, member.name, member.id in partners, csrf_token(key, claims))

    async def client() -> Client | HTMLResponse:
        try:
            return await temporal()
        except ServiceUnavailable:
            return message(503, "The dispatch service is unavailable", "Try again in a minute.")

    # --- signing in ----------------------------------------------------------------------

    @router.get("/signin")
    async def signin_page(t: str = "") -> HTMLResponse:
        key = board_secret()
        if key is None:
            return message(503, "The board is not set up", "Ask the operator to set it up.")
        try:
            claims = verify(key, "signin", t, clock())
            member = may_sign_in(config, claims.staff_id)
        except BoardAuthError as err:
            return _link_refused(message, err.reason)
        except NotAllowed as err:
            return message(403, "This link cannot open the board", str(err))
        return page("signin.html", token=t, name=member.name)

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        key = board_secret()
        if key is None:
            return message(503, "The board is not set up", "Ask the operator to set it up.")
        if _from_elsewhere(request):
            # Another site must not sign a browser in with a link of its own choosing.
            log.info("refused a board sign-in from another origin")
            return message(403, "Refused", "That sign-in did not come from the board.")
        fields = await read_form(request)
        try:
            claims = verify(key, "signin", (fields or {}).get("t", ""), clock())
            may_sign_in(config, claims.staff_id)
        except BoardAuthError as err:
            log.info("refused a board sign-in link: %s", err.reason)
            return _link_refused(message, err.reason)
        except NotAllowed as err:
            return message(403, "This link cannot open the board", str(err))
        if not used.first_use(claims, clock()):
            log.info("refused a board sign-in link: already used")
            return _link_refused(message, "used")
        log.info("board sign-in by %s", claims.staff_id)
        expires = clock() + SESSION_TTL
        response = RedirectResponse("/board", status_code=303, headers=_HEADERS)
        response.set_cookie(
            COOKIE,
            sign(key, "session", claims.staff_id, expires),
            max_age=int(SESSION_TTL.total_seconds()),
            path="/board",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        viewer = viewer_of(request)
        if isinstance(viewer, HTMLResponse):
            return viewer
        refused = await _check_post(request, viewer)
        if isinstance(refused, HTMLResponse):
            return refused
        response = message(200, "Signed out", "Open a new link from the bot to come back.")
        response.delete_cookie(COOKIE, path="/board")
        return response

    # --- the board -----------------------------------------------------------------------

    @router.get("")
    async def board_page(request: Request) -> HTMLResponse:
        viewer = viewer_of(request)
        if isinstance(viewer, HTMLResponse):
            return viewer
        try:
            filters = board.BoardFilters.parse(dict(request.query_params))
        except board.FilterError as err:
            return message(422, f"Filter {err.field}", err.reason, viewer)
        connected = await client()
        if isinstance(connected, HTMLResponse):
            return connected
        try:
            view = await bounded(
                connected,
                board.read_board(
                    connected,
                    firm_id=config.firm.id,
                    config=config,
                    filters=filters,
                    today=today(),
                    task_queue=task_queue,
                ),
            )
        except (ServiceUnavailable, RPCError) as err:
            log.warning("board not read: %s", type(err).__name__)
            return message(503, "The board could not be read", "Try again in a minute.", viewer)
        live = request.headers.get("X-Board-Live") == "1"
        key = board_secret() or ""
        return page(
            "_live.html" if live else "board.html",
            viewer=viewer,
            view=view,
            events={
                e.workflow_id: queue_event(key, viewer.claims, e)
                for e in view.review_queue
                if e.review_round is not None
            },
            shown=config.policy.partner_candidates_shown,
            filters=filters,
            statuses=[s.value for s in DispatchStatus],
            staff=sorted(config.staff, key=lambda s: s.name),
            services=config.service_types,
            refresh=REFRESH_SECONDS,
            query=urlencode(filters.as_params()),
        )

    # --- one engagement ------------------------------------------------------------------

    async def state_of(workflow_id: str, viewer: Viewer) -> EngagementState | HTMLResponse:
        if not is_engagement_workflow_id(workflow_id):
            return message(404, "No such engagement", "The address is not an engagement.", viewer)
        connected = await client()
        if isinstance(connected, HTMLResponse):
            return connected
        handle = connected.get_workflow_handle(workflow_id)
        try:
            state: EngagementState = await bounded(
                connected, handle.query(EngagementWorkflow.state, rpc_timeout=RPC_TIMEOUT)
            )
        except ServiceUnavailable:
            return message(503, "The engagement could not be read", "Try again.", viewer)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return message(404, "No such engagement", "It does not exist.", viewer)
            return message(503, "The engagement could not be read", "Try again.", viewer)
        except WorkflowQueryFailedError:
            return message(503, "The engagement could not be read", "Try again.", viewer)
        return state

    async def engagement_view(
        workflow_id: str, request: Request, template: str, limit: int | None = None
    ) -> HTMLResponse:
        viewer = viewer_of(request)
        if isinstance(viewer, HTMLResponse):
            return viewer
        state = await state_of(workflow_id, viewer)
        if isinstance(state, HTMLResponse):
            return state
        return page(
            template,
            viewer=viewer,
            s=state,
            candidates=candidates_of(state, limit),
            shown=limit,
            waiting=state.status is DispatchStatus.NEEDS_PARTNER_REVIEW,
            event=secrets.token_urlsafe(18),
            today=today(),
            outcome=request.query_params.get("outcome", "")[:300],
            refresh=REFRESH_SECONDS,
        )

    @router.get("/e/{workflow_id}")
    async def engagement_page(workflow_id: str, request: Request) -> HTMLResponse:
        live = request.headers.get("X-Board-Live") == "1"
        template = "_engagement.html" if live else "engagement.html"
        return await engagement_view(workflow_id, request, template)

    @router.get("/e/{workflow_id}/candidates")
    async def candidates_fragment(workflow_id: str, request: Request) -> HTMLResponse:
        # The queue shows as many as the partner's Slack message; the page shows everyone.
        shown = config.policy.partner_candidates_shown
        return await engagement_view(workflow_id, request, "_candidates.html", shown)

    @router.post("/e/{workflow_id}/decide")
    async def decide(workflow_id: str, request: Request) -> Response:
        def decision(viewer: Viewer, fields: dict[str, str], event: str) -> PartnerAction:
            staff_id = fields.get("staff_id", "")
            if not any(s.id == staff_id for s in config.staff):
                return ("staff_id", "not a person on the staff list")
            made = PartnerDecision(
                partner_id=viewer.claims.staff_id,
                staff_id=staff_id,
                override_capacity=fields.get("anyway") == "1",
                channel="board",
                event_id=event,
            )
            return lambda connected: deliver_decision(connected, workflow_id, made)

        return await partner_action(workflow_id, request, "decide", decision)

    @router.post("/e/{workflow_id}/due")
    async def move_due(workflow_id: str, request: Request) -> Response:
        def move(viewer: Viewer, fields: dict[str, str], event: str) -> PartnerAction:
            raw = fields.get("due_date", "").strip()
            try:
                due = date.fromisoformat(raw) if len(raw) == 10 else None
            except ValueError:
                due = None
            if due is None:
                return ("due_date", "a date as YYYY-MM-DD")
            problem = limits.due_date_problem(due, today())
            if problem is not None:
                return ("due_date", problem)
            made = DueDateMove(
                partner_id=viewer.claims.staff_id, due_date=due, channel="board", event_id=event
            )
            return lambda connected: deliver_due_move(connected, workflow_id, made)

        return await partner_action(workflow_id, request, "due", move)

    async def partner_action(
        workflow_id: str,
        request: Request,
        what: str,
        build: Callable[[Viewer, dict[str, str], str], PartnerAction],
    ) -> Response:
        """A partner's form: signed in, our own page, a partner, a real engagement, a fresh
        event id; then the Update, and back to the engagement with what it said. The Update
        id names the action too: the page's forms share one event token."""
        viewer = viewer_of(request)
        if isinstance(viewer, HTMLResponse):
            return viewer
        fields = await _check_post(request, viewer)
        if isinstance(fields, HTMLResponse):
            return fields
        if not viewer.partner:
            log.info("board %s by %s refused: not a deciding partner", what, viewer.claims.staff_id)
            return message(
                403, "Only partners decide", "Only the firm's deciding partners can.", viewer
            )
        if not is_engagement_workflow_id(workflow_id):
            return message(404, "No such engagement", "The address is not an engagement.", viewer)
        event = fields.get("event", "")
        if not _EVENT.fullmatch(event):
            return message(422, "Field event", "missing or damaged; reload the page", viewer)
        call = build(viewer, fields, f"board:{viewer.claims.staff_id}:{what}:{event}")
        if isinstance(call, tuple):
            return message(422, f"Field {call[0]}", call[1], viewer)
        connected = await client()
        if isinstance(connected, HTMLResponse):
            return connected
        try:
            outcome = await call(connected)
        except (Refused, UnknownEngagement) as err:
            log.info("board %s on %s refused", what, workflow_id)
            return message(409, "Not recorded", str(err), viewer)
        except ServiceUnavailable:
            return message(503, "Not recorded yet", "The service is busy; try again.", viewer)
        log.info("board %s on %s by %s recorded", what, workflow_id, viewer.claims.staff_id)
        target = f"/board/e/{workflow_id}?" + urlencode({"outcome": outcome.message})
        return RedirectResponse(target, status_code=303, headers=_HEADERS)

    # --- audit export --------------------------------------------------------------------

    @router.get("/audit.{fmt}")
    async def audit_export(fmt: str, request: Request) -> Response:
        viewer = viewer_of(request)
        if isinstance(viewer, HTMLResponse):
            return viewer
        if fmt not in ("csv", "json"):
            return message(404, "No such export", "The audit export is .csv or .json.", viewer)
        span: dict[str, date] = {}
        for name, default in (("from", today() - timedelta(days=30)), ("to", today())):
            raw = request.query_params.get(name, "")
            try:
                span[name] = date.fromisoformat(raw) if raw else default
            except ValueError:
                return message(422, f"Field {name}", "a date as YYYY-MM-DD", viewer)
            latest = limits.latest_due(today())
            if not limits.EARLIEST_DATE <= span[name] <= latest:
                reason = f"a date from {limits.EARLIEST_DATE} to {latest}"
                return message(422, f"Field {name}", reason, viewer)
        if span["to"] < span["from"]:
            return message(422, "Field to", "before from", viewer)
        if (span["to"] - span["from"]).days + 1 > audit.MAX_DAYS:
            return message(422, "Field to", f"at most {audit.MAX_DAYS} days after from", viewer)
        connected = await client()
        if isinstance(connected, HTMLResponse):
            return connected
        try:
            records = await audit.collect_decisions(connected, span["from"], span["to"])
        except audit.AuditUnavailable as err:
            return message(503, "Audit export unavailable", str(err), viewer)
        body = audit.render_audit(records, "csv" if fmt == "csv" else "json")
        name = f"dispatch-audit-{span['from']}-{span['to']}.{fmt}"
        return Response(
            body,
            media_type="text/csv" if fmt == "csv" else "application/json",
            headers={**_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    # --- our own script and style --------------------------------------------------------

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        media = STATIC.get(name)
        if media is None:
            return Response(status_code=404)
        return Response(
            (HERE / "static" / name).read_bytes(),
            media_type=media,
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    async def _check_post(request: Request, viewer: Viewer) -> dict[str, str] | HTMLResponse:
        """The form, when it comes from our own page: same origin and the session's token."""
        if _from_elsewhere(request):
            log.info("refused a board form from another origin")
            return message(403, "Refused", "That form did not come from the board.", viewer)
        fields = await read_form(request)
        if fields is None:
            return message(413, "Too much data", "Nothing was done.", viewer)
        key = board_secret()
        if key is None or not csrf_ok(key, viewer.claims, fields.get("csrf", "")):
            log.info("refused a board form: missing or wrong CSRF token")
            return message(403, "Refused", "The page was out of date: reload it.", viewer)
        return fields

    return router


def _from_elsewhere(request: Request) -> bool:
    """A form posted from another origin than ours (no Origin or Referer: a client that sends
    neither is not a browser on another site)."""
    origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
    try:
        return bool(origin) and urlsplit(origin).netloc != request.url.netloc
    except ValueError:  # not a URL at all ("http://["): not from our page either
        return True


_LINK_PAGES: dict[str, tuple[int, str, str]] = {
    "forged": (403, "This link is not valid", "It was not issued by the dispatch service."),
    "expired": (410, "This link has expired", "Ask the bot for a new one (/board in Slack)."),
    "malformed": (400, "This link is incomplete", "Open it from the original message."),
    "used": (409, "This link was already used", "Ask the bot for a new one (/board in Slack)."),
}


def _link_refused(message: Callable[..., HTMLResponse], reason: str) -> HTMLResponse:
    status, title, text = _LINK_PAGES[reason]
    return message(status, title, text)
