"""Testing tools that ship with the SDK: a faithful fake Giosg, a virtual clock, checks.

* :class:`FakeGiosg`: HTTP (and real-time) Giosg on 127.0.0.1, with fault injection.
* :class:`FakeClock`: virtual time for renewal and backoff tests.
* :class:`Fault`: a scripted failure for ``FakeGiosg.inject``.
* :func:`check_store`: the conformance suite for :class:`~giosg_visitor.Store` implementations.
* :class:`MessageRouter`: the fake's real-time socket server on its own, for socket tests.
* :class:`LoopThread`: an asyncio loop in a background thread, to serve a server from.
* :data:`DropMode`, :data:`RotationMode`: the modes of the fake's socket drops and secret
  rotation, for annotating tests that choose one.
* :func:`secret_forms`: the forms of a secret to search logs and errors for (leak checks).

``FakeGiosg`` needs the ``fake`` extra (``pip install "giosg-visitor[fake]"``: starlette
and uvicorn). It is imported on first use, so ``FakeClock``, ``Fault``, ``check_store`` and
the rest work without the extra, and a missing extra is reported with that install command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clock import FakeClock as FakeClock
from ._faults import Fault as Fault, FaultPlan as FaultPlan
from ._kinds import DropMode as DropMode, RotationMode as RotationMode
from ._leaks import secret_forms as secret_forms
from ._loop_thread import LoopThread as LoopThread
from ._store_suite import check_store as check_store


if TYPE_CHECKING:
    from ._router import MessageRouter as MessageRouter
    from ._server import FakeGiosg as FakeGiosg


__all__ = [
    "DropMode",
    "FakeClock",
    "FakeGiosg",
    "Fault",
    "FaultPlan",
    "LoopThread",
    "MessageRouter",
    "RotationMode",
    "check_store",
    "secret_forms",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: the fake's web stack is an optional extra, and this package is
    # also imported by the pytest plugin in projects that never use the fake.
    if name == "FakeGiosg":
        from .._extras import FAKE_HINT, require

        require("starlette", "uvicorn", hint=FAKE_HINT)
        from ._server import FakeGiosg

        globals()["FakeGiosg"] = FakeGiosg
        return FakeGiosg
    if name == "MessageRouter":
        # Lazy too: it imports the websockets server, which most users never start.
        from ._router import MessageRouter

        globals()["MessageRouter"] = MessageRouter
        return MessageRouter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
