"""Testing tools that ship with the SDK: a faithful fake Giosg, a virtual clock, checks.

* :class:`FakeGiosg`: HTTP (and real-time) Giosg on 127.0.0.1, with fault injection.
* :class:`FakeClock`: virtual time for renewal and backoff tests.
* :class:`Fault`: a scripted failure for ``FakeGiosg.inject``.
* :func:`check_store`: the conformance suite for :class:`~giosg_visitor.Store` implementations.
"""

from __future__ import annotations

from ._clock import FakeClock as FakeClock
from ._faults import Fault as Fault, FaultPlan as FaultPlan
from ._server import FakeGiosg as FakeGiosg
from ._store_suite import check_store as check_store


__all__ = ["FakeClock", "FakeGiosg", "Fault", "FaultPlan", "check_store"]
