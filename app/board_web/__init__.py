"""The dispatch board on the web: ``/board`` on the webhook server (see ``routes``)."""

from app.board_web.auth import NotAllowed, signin_link
from app.board_web.routes import create_board_router

__all__ = ["NotAllowed", "create_board_router", "signin_link"]
