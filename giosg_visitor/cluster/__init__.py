"""Cluster mode: many workers, one owner per active visitor, exactly-once acknowledgement.

Needs the ``redis`` extra. See :class:`RedisCoordinator` and ``VisitorPool.inbound()``.
"""

from __future__ import annotations

from ._runtime import Deliveries as Deliveries
from ._types import (
    ClusterStats as ClusterStats,
    Delivery as Delivery,
    DeliveryLostError as DeliveryLostError,
    Lease as Lease,
    LeaseLostError as LeaseLostError,
)
from .coordinator import ClusterState as ClusterState, RedisCoordinator as RedisCoordinator


__all__ = [
    "ClusterState",
    "ClusterStats",
    "Deliveries",
    "Delivery",
    "DeliveryLostError",
    "Lease",
    "LeaseLostError",
    "RedisCoordinator",
]
