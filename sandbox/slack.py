"""Slack Web API emulator: ``/slack/api/<method>`` plus a ``response_url`` sink.

What it holds to (Slack's method pages and the python-slack-sdk transport):

- Every method answers HTTP 200 with ``{"ok": true|false, "error": "<code>"}``; only rate limits
  are HTTP 429 (``{"ok":false,"error":"ratelimited"}`` + ``Retry-After``), injected as faults.
- ``Authorization: Bearer xoxb-...`` (or a ``token`` form/query argument): none is
  ``not_authed``, a wrong one ``invalid_auth``.
- Arguments come from the query string and from a form-encoded body; a JSON body is read only by
  methods that accept JSON (the ``chat.*`` writes and ``conversations.open``/``auth.test``).
  ``users.lookupByEmail`` is form/query only, as Slack documents; which other methods take JSON
  is partly confirmed [P].
- Block Kit limits on messages: ``action_id`` <= 255 and unique within its block, button
  ``value`` <= 2000, button text <= 75, <= 25 elements per ``actions`` block, ``block_id`` <= 255
  and unique within the message; violations are ``invalid_blocks`` with the JSON pointer of the
  offending field in ``response_metadata.messages`` (message wording is an assumption [A]).
- DMs: ``conversations.open`` with one user gives a stable ``D...`` id per user and reports
  ``already_open`` (and ``no_op``) on a repeat.

Message timestamps are deterministic (``1700000000.000100``, ``.000200``, ...) so tests can
compare them. ``invalid_arguments`` for a missing required argument follows Slack's generic
error [P]; ``unknown_method`` for an unknown method is an assumption [A].
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.secrets_demo import demo_secret
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "slack"
TOKEN_ENV = "SLACK_BOT_TOKEN"
TEAM_ID = "T0SANDBOX"
TEAM_NAME = "Sandbox Workspace"
BOT_USER_ID = "U0DISPATCH"
BOT_ID = "B0DISPATCH"
APP_ID = "A0DISPATCH"
SCOPES = "chat:write,im:write,im:history,users:read,users:read.email"
GENERAL_CHANNEL = "C0GENERAL"

MAX_BLOCKS = 50
MAX_ACTION_ID = 255
MAX_BLOCK_ID = 255
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_TEXT = 75
MAX_BUTTON_URL = 3000
MAX_ACTIONS_ELEMENTS = 25
MAX_TEXT = 40_000
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_MPIM_USERS = 8
RESPONSE_URL_MAX_POSTS = 5
"""Slack allows five posts per response_url [P] (third-party guide)."""

_JSON_METHODS = {
    "auth.test",
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "conversations.open",
}
_BLOCK_TYPES = {
    "section",
    "header",
    "actions",
    "context",
    "divider",
    "image",
    "input",
    "rich_text",
    "file",
    "video",
}
_ELEMENT_TYPES = {
    "button",
    "static_select",
    "external_select",
    "users_select",
    "conversations_select",
    "channels_select",
    "overflow",
    "datepicker",
    "timepicker",
    "checkboxes",
    "radio_buttons",
    "multi_static_select",
    "multi_users_select",
    "workflow_button",
}


class SlackError(Exception):
    """An ``ok:false`` answer (still HTTP 200, as Slack does)."""

    def __init__(self, code: str, messages: list[str] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.messages = messages or []


class SlackStore:
    def __init__(self, seed: SandboxSeed) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        for member in seed.staff:
            if member.slack_id is None:
                continue
            self.users[member.slack_id] = _user(
                member.slack_id, member.id, member.name, member.email, deleted=not member.active
            )
        self.users[BOT_USER_ID] = {
            **_user(BOT_USER_ID, "dispatch", "Dispatch", None, deleted=False),
            "is_bot": True,
        }
        self.channels: dict[str, dict[str, Any]] = {
            GENERAL_CHANNEL: {
                "id": GENERAL_CHANNEL,
                "name": "general",
                "is_channel": True,
                "is_im": False,
                "is_mpim": False,
                "created": 1700000000,
            },
        }
        self.messages: dict[str, list[dict[str, Any]]] = {GENERAL_CHANNEL: []}
        """Per channel, oldest first."""
        self.updates: list[dict[str, Any]] = []
        self.ephemeral: list[dict[str, Any]] = []
        self.response_posts: dict[str, list[dict[str, Any]]] = {}
        self.response_bindings: dict[str, dict[str, str]] = {}
        """response_url token -> the message it belongs to (channel, ts), when bound."""
        self._seq = 0

    def next_ts(self) -> str:
        self._seq += 1
        micros = self._seq * 100
        return f"{1700000000 + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        wanted = email.strip().lower()
        return next(
            (u for u in self.users.values() if (u["profile"].get("email") or "").lower() == wanted),
            None,
        )

    def open_dm(self, user_id: str) -> tuple[dict[str, Any], bool]:
        """The DM with ``user_id`` and whether it was already open."""
        channel_id = dm_channel_id(user_id)
        existing = self.channels.get(channel_id)
        if existing is not None:
            return existing, True
        channel = {
            "id": channel_id,
            "is_im": True,
            "is_channel": False,
            "is_mpim": False,
            "user": user_id,
            "created": 1700000000 + len(self.channels),
        }
        self.channels[channel_id] = channel
        self.messages[channel_id] = []
        return channel, False

    def open_mpim(self, user_ids: list[str]) -> tuple[dict[str, Any], bool]:
        members = sorted({*user_ids, BOT_USER_ID})
        digest = hashlib.sha1(",".join(members).encode()).hexdigest()[:10].upper()
        channel_id = f"G{digest}"
        existing = self.channels.get(channel_id)
        if existing is not None:
            return existing, True
        channel = {
            "id": channel_id,
            "is_im": False,
            "is_channel": False,
            "is_mpim": True,
            "members": members,
            "created": 1700000000 + len(self.channels),
        }
        self.channels[channel_id] = channel
        self.messages[channel_id] = []
        return channel, False

    def find_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    def dump(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels.values()),
            "messages": self.messages,
            "updates": self.updates,
            "ephemeral": self.ephemeral,
            "response_posts": self.response_posts,
        }


def _user(
    user_id: str, handle: str, name: str, email: str | None, *, deleted: bool
) -> dict[str, Any]:
    profile: dict[str, Any] = {"real_name": name, "display_name": name.split(" ")[0]}
    if email:
        profile["email"] = email
    return {
        "id": user_id,
        "team_id": TEAM_ID,
        "name": handle,
        "real_name": name,
        "deleted": deleted,
        "is_bot": False,
        "tz": "America/New_York",
        "profile": profile,
    }


def dm_channel_id(user_id: str) -> str:
    """Stable per user, so a re-opened DM (and a reset sandbox) keeps its id."""
    return "D" + user_id[1:]


def create_store(seed: SandboxSeed) -> SlackStore:
    return SlackStore(seed)


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    if status == 429:
        return {"ok": False, "error": "ratelimited"}, "application/json; charset=utf-8"
    if status >= 500:
        # Slack's edge answers outages with a bare text body, not the API's JSON envelope.
        return "upstream error", "text/plain; charset=utf-8"
    return {"ok": False, "error": "invalid_request"}, "application/json; charset=utf-8"  # [A]


def response_url_for(
    ctx: SandboxContext | str,
    token: str,
    *,
    channel: str | None = None,
    message_ts: str | None = None,
) -> str:
    """A response_url pointing at this sandbox's sink.

    With ``channel`` and ``message_ts`` the token is bound to that message, so a post with
    ``replace_original``/``delete_original`` changes it the way Slack would.
    """
    base = ctx if isinstance(ctx, str) else ctx.base_url
    if channel is not None and message_ts is not None:
        if isinstance(ctx, str):
            raise ValueError("binding a response_url to a message needs the SandboxContext")
        store: SlackStore = ctx.stores[NAME]
        store.response_bindings[token] = {"channel": channel, "ts": message_ts}
    return f"{base.rstrip('/')}/{NAME}/response/{token}"


# --- Block Kit validation --------------------------------------------------------------------


def _text_problems(
    obj: Any, where: str, *, plain_only: bool = False, max_len: int = MAX_SECTION_TEXT
) -> list[str]:
    if not isinstance(obj, dict):
        return [f"must be a text object [json-pointer:{where}]"]
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in kinds:
        return [f"must be one of {', '.join(kinds)} [json-pointer:{where}/type]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{where}/text]"]
    if len(text) > max_len:
        return [f"must be less than {max_len + 1} characters [json-pointer:{where}/text]"]
    return []


def _element_problems(element: Any, where: str) -> list[str]:
    if not isinstance(element, dict) or element.get("type") not in _ELEMENT_TYPES:
        return [f"unsupported element type [json-pointer:{where}/type]"]
    problems: list[str] = []
    action_id = element.get("action_id")
    if action_id is not None and (
        not isinstance(action_id, str) or not 0 < len(action_id) <= MAX_ACTION_ID
    ):
        problems.append(f"must be 1-{MAX_ACTION_ID} characters [json-pointer:{where}/action_id]")
    if element["type"] == "button":
        problems += _text_problems(
            element.get("text"), f"{where}/text", plain_only=True, max_len=MAX_BUTTON_TEXT
        )
        value = element.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > MAX_BUTTON_VALUE):
            problems.append(
                f"must be less than {MAX_BUTTON_VALUE + 1} characters [json-pointer:{where}/value]"
            )
        url = element.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > MAX_BUTTON_URL):
            problems.append(
                f"must be less than {MAX_BUTTON_URL + 1} characters [json-pointer:{where}/url]"
            )
        if "style" in element and element["style"] not in ("primary", "danger"):
            problems.append(f"must be one of primary, danger [json-pointer:{where}/style]")
    return problems


def _block_problems(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
        return [f"unsupported type [json-pointer:{where}/type]"]
    kind = block["type"]
    problems: list[str] = []
    if kind == "header":
        problems += _text_problems(
            block.get("text"), f"{where}/text", plain_only=True, max_len=MAX_HEADER_TEXT
        )
    elif kind == "section":
        fields = block.get("fields")
        if "text" not in block and not fields:
            problems.append(f"must provide text or fields [json-pointer:{where}]")
        if "text" in block:
            problems += _text_problems(block["text"], f"{where}/text")
        if fields is not None:
            if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
                problems.append(
                    f"must have at most {MAX_FIELDS} items [json-pointer:{where}/fields]"
                )
            else:
                for i, field in enumerate(fields):
                    problems += _text_problems(field, f"{where}/fields/{i}", max_len=2000)
        if "accessory" in block:
            problems += _element_problems(block["accessory"], f"{where}/accessory")
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= MAX_CONTEXT_ELEMENTS:
            problems.append(
                f"must have 1-{MAX_CONTEXT_ELEMENTS} items [json-pointer:{where}/elements]"
            )
        else:
            for i, element in enumerate(elements):
                if isinstance(element, dict) and element.get("type") == "image":
                    continue
                problems += _text_problems(element, f"{where}/elements/{i}")
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= MAX_ACTIONS_ELEMENTS:
            problems.append(
                f"must have 1-{MAX_ACTIONS_ELEMENTS} items [json-pointer:{where}/elements]"
            )
        else:
            seen: set[str] = set()
            for i, element in enumerate(elements):
                problems += _element_problems(element, f"{where}/elements/{i}")
                action_id = element.get("action_id") if isinstance(element, dict) else None
                if isinstance(action_id, str):
                    if action_id in seen:
                        problems.append(
                            "action_id must be unique within the block "
                            f"[json-pointer:{where}/elements/{i}/action_id]"
                        )
                    seen.add(action_id)
    return problems


def validate_blocks(blocks: Any) -> list[str]:
    """Every reason Slack would answer ``invalid_blocks``, as JSON-pointer messages."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    if len(blocks) > MAX_BLOCKS:
        return [f"must have at most {MAX_BLOCKS} items [json-pointer:/blocks]"]
    problems: list[str] = []
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        problems += _block_problems(block, where)
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if block_id is None:
            continue
        if not isinstance(block_id, str) or not 0 < len(block_id) <= MAX_BLOCK_ID:
            problems.append(f"must be 1-{MAX_BLOCK_ID} characters [json-pointer:{where}/block_id]")
        elif block_id in block_ids:
            problems.append(f"block_id must be unique [json-pointer:{where}/block_id]")
        else:
            block_ids.add(block_id)
    return [f"[ERROR] {p}" for p in problems]


# --- request plumbing ------------------------------------------------------------------------


async def _arguments(request: Request, method: str) -> tuple[dict[str, Any], bool]:
    """Query + body arguments, and whether the body was JSON."""
    args: dict[str, Any] = dict(request.query_params)
    raw = await request.body()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        if method not in _JSON_METHODS:
            # Slack ignores JSON bodies on form-only methods: the arguments are simply absent.
            return args, True
        try:
            body = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError):
            raise SlackError("invalid_json") from None
        if not isinstance(body, dict):
            raise SlackError("json_not_object")
        return {**args, **body}, True
    if raw:
        args.update(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    return args, False


def _check_auth(request: Request, args: dict[str, Any], is_json: bool) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = value.strip() if scheme.lower() == "bearer" else ""
    if not token and not is_json:
        token = str(args.get("token") or "")
    if not token:
        raise SlackError("not_authed")
    if token != demo_secret(TOKEN_ENV):
        raise SlackError("invalid_auth")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


def _json_arg(args: dict[str, Any], name: str, error: str) -> Any:
    """Form posts carry ``blocks``/``metadata`` as JSON strings; JSON posts as objects."""
    value = args.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError(error) from None
    return value


def _required(args: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if args.get(n) in (None, "")]
    if missing:
        raise SlackError(
            "invalid_arguments", [f"[ERROR] missing required field: {n}" for n in missing]
        )


def _content(args: dict[str, Any]) -> tuple[str | None, list[Any] | None, dict[str, Any] | None]:
    """Validated text, blocks and metadata of a chat.* write."""
    text = args.get("text")
    if text is not None and not isinstance(text, str):
        text = str(text)
    blocks = _json_arg(args, "blocks", "invalid_blocks_format")
    if blocks is not None:
        if not isinstance(blocks, list):
            raise SlackError("invalid_blocks_format")
        problems = validate_blocks(blocks)
        if problems:
            raise SlackError("invalid_blocks", problems)
    attachments = _json_arg(args, "attachments", "invalid_attachments")
    if not text and not blocks and not attachments:
        raise SlackError("no_text")
    if text is not None and len(text) > MAX_TEXT:
        raise SlackError("msg_too_long")
    metadata = _json_arg(args, "metadata", "invalid_metadata_format")
    if metadata is not None:
        if (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not isinstance(metadata.get("event_payload"), dict)
        ):
            raise SlackError("invalid_metadata_format")
    return text, blocks, metadata


def _public(message: dict[str, Any], *, with_metadata: bool) -> dict[str, Any]:
    shown = copy.deepcopy(message)
    if not with_metadata:
        shown.pop("metadata", None)
    return shown


# --- the methods -----------------------------------------------------------------------------


def _auth_test(ctx: SandboxContext, store: SlackStore, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": f"{ctx.base_url}/{NAME}/",
        "team": TEAM_NAME,
        "user": "dispatch",
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": BOT_ID,
        "is_enterprise_install": False,
    }


def _users_lookup_by_email(
    ctx: SandboxContext, store: SlackStore, args: dict[str, Any]
) -> dict[str, Any]:
    _required(args, "email")
    user = store.user_by_email(str(args["email"]))
    if user is None or user["deleted"]:
        raise SlackError("users_not_found")  # deactivated users too, as Slack documents
    return {"user": copy.deepcopy(user)}


def _users_info(ctx: SandboxContext, store: SlackStore, args: dict[str, Any]) -> dict[str, Any]:
    _required(args, "user")
    user = store.users.get(str(args["user"]))
    if user is None:
        raise SlackError("user_not_found")
    return {"user": copy.deepcopy(user)}


def _conversations_open(
    ctx: SandboxContext, store: SlackStore, args: dict[str, Any]
) -> dict[str, Any]:
    users = args.get("users")
    channel_arg = args.get("channel")
    if isinstance(users, list):
        user_ids = [str(u).strip() for u in users if str(u).strip()]
    else:
        user_ids = [u.strip() for u in str(users or "").split(",") if u.strip()]
    if not user_ids:
        if not channel_arg:
            raise SlackError("users_list_not_supplied")
        channel = store.channels.get(str(channel_arg))
        if channel is None:
            raise SlackError("channel_not_found")
        opened, already = channel, True
    else:
        if len(user_ids) > MAX_MPIM_USERS:
            raise SlackError("too_many_users")
        for user_id in user_ids:
            user = store.users.get(user_id)
            if user is None:
                raise SlackError("user_not_found")
            if user["deleted"]:
                raise SlackError("user_disabled")
        if len(user_ids) == 1:
            opened, already = store.open_dm(user_ids[0])
        else:
            opened, already = store.open_mpim(user_ids)
    shown = copy.deepcopy(opened) if _flag(args.get("return_im", False)) else {"id": opened["id"]}
    answer: dict[str, Any] = {"channel": shown}
    if already:
        answer.update(no_op=True, already_open=True)
    return answer


def _resolve_channel(store: SlackStore, channel_arg: Any) -> str:
    """A channel id, or a user id (posting to a user id reaches their DM, as Slack does)."""
    channel_id = str(channel_arg)
    if channel_id in store.channels:
        return channel_id
    user = store.users.get(channel_id)
    if user is not None and not user["deleted"]:
        return str(store.open_dm(channel_id)[0]["id"])
    raise SlackError("channel_not_found")


def _chat_post_message(
    ctx: SandboxContext, store: SlackStore, args: dict[str, Any]
) -> dict[str, Any]:
    if not args.get("channel"):
        raise SlackError("channel_not_found")
    channel = _resolve_channel(store, args["channel"])
    text, blocks, metadata = _content(args)
    message: dict[str, Any] = {
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "team": TEAM_ID,
        "ts": store.next_ts(),
        "text": text or "",
    }
    if blocks is not None:
        message["blocks"] = blocks
    if metadata is not None:
        message["metadata"] = metadata
    if args.get("thread_ts"):
        message["thread_ts"] = str(args["thread_ts"])
    store.messages[channel].append(message)
    return {
        "channel": channel,
        "ts": message["ts"],
        "message": _public(message, with_metadata=False),
    }


def _chat_update(ctx: SandboxContext, store: SlackStore, args: dict[str, Any]) -> dict[str, Any]:
    _required(args, "channel", "ts")
    channel = str(args["channel"])
    if channel not in store.channels:
        raise SlackError("channel_not_found")
    message = store.find_message(channel, str(args["ts"]))
    if message is None:
        raise SlackError("message_not_found")
    text, blocks, metadata = _content(args)
    if text is not None:
        message["text"] = text
    if blocks is not None:
        message["blocks"] = blocks
    if metadata is not None:
        message["metadata"] = metadata
    message["edited"] = {"user": BOT_USER_ID, "ts": store.next_ts()}
    store.updates.append(
        {
            "channel": channel,
            "ts": message["ts"],
            "text": text,
            "blocks": blocks,
            "metadata": metadata,
        }
    )
    return {
        "channel": channel,
        "ts": message["ts"],
        "text": message["text"],
        "message": _public(message, with_metadata=False),
    }


def _chat_post_ephemeral(
    ctx: SandboxContext, store: SlackStore, args: dict[str, Any]
) -> dict[str, Any]:
    _required(args, "channel", "user")
    channel_id = str(args["channel"])
    channel = store.channels.get(channel_id)
    if channel is None:
        raise SlackError("channel_not_found")
    user_id = str(args["user"])
    if user_id not in store.users:
        raise SlackError("user_not_found")
    if channel.get("is_im") and channel.get("user") != user_id:
        raise SlackError("user_not_in_channel")
    text, blocks, _ = _content(args)
    ts = store.next_ts()
    store.ephemeral.append(
        {"channel": channel_id, "user": user_id, "ts": ts, "text": text or "", "blocks": blocks}
    )
    return {"message_ts": ts}


def _conversations_history(
    ctx: SandboxContext, store: SlackStore, args: dict[str, Any]
) -> dict[str, Any]:
    _required(args, "channel")
    channel = str(args["channel"])
    if channel not in store.channels:
        raise SlackError("channel_not_found")
    try:
        limit = int(args.get("limit") or 100)
        offset = int(args.get("cursor") or 0)
    except ValueError:
        raise SlackError("invalid_cursor") from None
    limit = max(1, min(limit, 999))
    newest_first = list(reversed(store.messages[channel]))
    page = newest_first[offset : offset + limit]
    with_metadata = _flag(args.get("include_all_metadata", False))
    has_more = offset + limit < len(newest_first)
    return {
        "messages": [_public(m, with_metadata=with_metadata) for m in page],
        "has_more": has_more,
        "pin_count": 0,
        # An opaque cursor in Slack; here the offset as text [A].
        "response_metadata": {"next_cursor": str(offset + limit) if has_more else ""},
    }


_METHODS = {
    "auth.test": _auth_test,
    "users.lookupByEmail": _users_lookup_by_email,
    "users.info": _users_info,
    "conversations.open": _conversations_open,
    "conversations.history": _conversations_history,
    "chat.postMessage": _chat_post_message,
    "chat.update": _chat_update,
    "chat.postEphemeral": _chat_post_ephemeral,
}


def _slack_json(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        body, status_code=200, headers=headers, media_type="application/json; charset=utf-8"
    )


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(tags=["slack"])

    @router.api_route(f"/{NAME}/api/{{method}}", methods=["GET", "POST"])
    async def api(method: str, request: Request) -> Response:
        handler = _METHODS.get(method)
        if handler is None:
            return _slack_json({"ok": False, "error": "unknown_method"})
        store: SlackStore = ctx.stores[NAME]
        try:
            args, is_json = await _arguments(request, method)
            _check_auth(request, args, is_json)
            answer = handler(ctx, store, args)
        except SlackError as err:
            body: dict[str, Any] = {"ok": False, "error": err.code}
            if err.messages:
                body["errors"] = err.messages
                body["response_metadata"] = {"messages": err.messages}
            return _slack_json(body)
        return _slack_json({"ok": True, **answer}, headers={"x-oauth-scopes": SCOPES})

    @router.post(f"/{NAME}/response/{{token}}")
    async def response_url(token: str, request: Request) -> Response:
        store: SlackStore = ctx.stores[NAME]
        posts = store.response_posts.setdefault(token, [])
        if len(posts) >= RESPONSE_URL_MAX_POSTS:
            # What Slack answers past the limit is an assumption [A].
            return JSONResponse({"ok": False, "error": "used_url"}, status_code=404)
        raw = await request.body()
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if media == "application/json":
                body = json.loads(raw)
            else:
                body = json.loads(dict(parse_qsl(raw.decode())).get("payload", ""))
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"ok": False, "error": "invalid_payload"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "invalid_payload"}, status_code=400)
        if body.get("blocks") is not None:
            problems = validate_blocks(body["blocks"])
            if problems:
                return JSONResponse(
                    {
                        "ok": False,
                        "error": "invalid_blocks",
                        "response_metadata": {"messages": problems},
                    },
                    status_code=400,
                )
        posts.append(body)
        _apply_to_original(store, token, body)
        return JSONResponse({"ok": True})

    return router


def _apply_to_original(store: SlackStore, token: str, body: dict[str, Any]) -> None:
    binding = store.response_bindings.get(token)
    if binding is None:
        return
    channel, ts = binding["channel"], binding["ts"]
    message = store.find_message(channel, ts)
    if message is None:
        return
    if _flag(body.get("delete_original", False)):
        store.messages[channel].remove(message)
        return
    if _flag(body.get("replace_original", False)):
        message["text"] = body.get("text") or ""
        if body.get("blocks") is not None:
            message["blocks"] = body["blocks"]
        else:
            message.pop("blocks", None)
        store.updates.append(
            {
                "channel": channel,
                "ts": ts,
                "text": message["text"],
                "blocks": body.get("blocks"),
                "metadata": None,
                "via": "response_url",
            }
        )
