"""The short cluster soak: 4 worker processes over a real redis-server and a fake Giosg
in its own process; a random worker SIGKILLed every 15 s and restarted.

Half the workers run on asyncio, half on trio. The long version (1,000 visitors, 10
minutes) is ``scripts/cluster-soak`` without options; docs/guides/scaling.md has its
figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent.parent


def test_short_soak_loses_nothing_and_acks_nothing_twice(redis_url: str) -> None:
    command = [sys.executable, str(ROOT / "scripts" / "cluster_soak.py"), "--json"]
    command += ["--redis", redis_url, "--visitors", "40", "--duration", "46", "--rate", "10"]
    command += ["--lease", "2", "--redeliver", "4", "--drain", "60", "--backend", "mixed"]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["kills"] >= 3
    assert figures["sent"] >= 300
    assert figures["lost"] == 0, figures
    assert figures["acked_twice"] == 0, figures
    assert figures["acked"] == figures["sent"]
    assert figures["takeover_never"] == 0, figures
    assert figures["takeovers"] > 0
    assert figures["sockets_per_visitor"] == {"1": 40}, figures
    # Owners resume the token the front door saved: no worker authenticates again.
    assert figures["auth_per_visitor"] == 1.0, figures
    assert result.returncode == 0, figures
