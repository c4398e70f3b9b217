"""``python -m giosg_visitor``: the same as the ``giosg-visitor`` command."""

from __future__ import annotations

import sys

from .cli import main


sys.exit(main())
