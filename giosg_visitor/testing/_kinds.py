"""The literal types of the test kit's controls, in a module without the fake's web stack.

``FakeGiosg`` and ``MessageRouter`` need optional extras (starlette, uvicorn, the
websockets server); a test that only annotates with these types must not import them.
"""

from __future__ import annotations

from typing import Literal, TypeAlias


__all__ = ["DropMode", "RotationMode"]

#: How :meth:`FakeGiosg.drop_sockets <giosg_visitor.testing.FakeGiosg.drop_sockets>` and
#: :meth:`MessageRouter.drop_all <giosg_visitor.testing.MessageRouter.drop_all>` drop
#: connections: ``"reset"`` (TCP reset), ``"close"`` (a close frame with a code) or
#: ``"blackhole"`` (TCP stays open, nothing is read, written or answered).
DropMode: TypeAlias = Literal["reset", "close", "blackhole"]

#: How ``FakeGiosg(rotate_secrets=...)`` rotates ``visitor_secret_id`` on auth:
#: ``"grace"`` (a new secret on every auth, the previous one still valid for
#: ``rotation_grace`` seconds) or ``"strict"`` (only the newest secret is accepted).
#: ``None`` there means it never rotates.
RotationMode: TypeAlias = Literal["grace", "strict"]
