"""Run a bench script with another copy of the SDK in this process only.

``PYTHONPATH=<checkout>`` puts an older SDK into the bench server's child process too,
and an older fake may not serve the current bench server. This puts ``<checkout>`` first
on the path of the client (this process) and leaves the server child on the installed
SDK::

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/with_sdk.py /tmp/before bench/bench_scale.py --visitors 10000

Scripts that measure in child processes of their own (``bench_memory.py``) need
``PYTHONPATH`` instead.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> None:
    """Put the checkout first on the path, then run the script as ``__main__``."""
    if len(sys.argv) < 3:
        raise SystemExit("usage: with_sdk.py <checkout> <bench script> [its options]")
    checkout, script = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    if not (checkout / "giosg_visitor" / "__init__.py").is_file():
        raise SystemExit(f"{checkout} has no giosg_visitor package")
    sys.path[:1] = [str(checkout), str(script.parent)]
    sys.argv = [str(script), *sys.argv[3:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
