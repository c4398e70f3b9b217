"""One way to be an async context manager: ``async with x`` is ``_aopen()``, then ``aclose()``."""

from __future__ import annotations

from types import TracebackType
from typing import Self


__all__ = ["AsyncResource"]


class AsyncResource:
    """``__aenter__``/``__aexit__`` made of an open hook and :meth:`aclose`.

    A subclass writes :meth:`aclose` (idempotent: it also runs after a failed block) and,
    when entering must do work or refuse, :meth:`_aopen`. ``async with resource:`` and an
    explicit ``await resource.aclose()`` then release the same way, and a resource that
    needs no ``async with`` (a store) works with just ``aclose()``.
    """

    __slots__ = ()

    async def _aopen(self) -> None:
        """Get ready for use; raise to refuse (``aclose`` is then not called)."""

    async def aclose(self) -> None:
        """Release everything; safe to call twice."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self._aopen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
