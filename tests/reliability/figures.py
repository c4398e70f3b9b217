"""The figures of a reliability run: counters the tests add to, a JSON file, a summary.

Tests add to the process-wide :data:`FIGURES` (through the ``figures`` fixture)::

    figures.add("trials.sends", 200)
    figures.add("messages.lost", len(lost))   # before asserting, so a failure still counts

Counter names are dotted; the first part is the group the summary adds up:
``trials``, ``faults``, ``fuzz`` (``fuzz.frames``, ``fuzz.bodies``), ``messages``
(``messages.expected``, ``messages.lost``, ``messages.duplicates``), ``secrets``
(``secrets.checked``, ``secrets.leaked``), ``refusals`` (``refusals.injected``,
``refusals.recovered``, ``refusals.unrecovered``: socket subscriptions the server
refused and that a token renewal recovered), ``records``, ``visitors``
(``visitors.ended_by_fault``) and ``tests``. Store faults are ``faults.store_<kind>``.

When ``GIOSG_FIGURES=<path>`` is set, the session writes the counters to ``<path>`` as
JSON at its end; ``python -m tests.reliability.figures <path>`` prints them and exits
with status 1 if a message was lost or duplicated, a secret leaked or a fault ended a
visitor.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final


__all__ = [
    "FIGURES",
    "FIGURES_ENV",
    "LIFECYCLE_MUST_BE_ZERO",
    "WINDOW_HISTOGRAM",
    "Figures",
    "lifecycle_rows",
    "main",
    "summary",
]

#: Where the session writes its counters (unset: nowhere).
FIGURES_ENV: Final = "GIOSG_FIGURES"

#: The counters that must stay at zero.
MUST_BE_ZERO: Final = (
    "messages.lost",
    "messages.duplicates",
    "secrets.leaked",
    "visitors.ended_by_fault",
    "refusals.unrecovered",
)


class Figures:
    """Thread-safe named counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter ``name`` (created at 0)."""
        if "." not in name:
            raise ValueError(f"counter names are dotted (group.name), not {name!r}")
        with self._lock:
            self._counts[name] += int(amount)

    def maximum(self, name: str, value: int) -> None:
        """Raise the counter ``name`` to ``value`` if it is lower (a peak, not a sum)."""
        if "." not in name:
            raise ValueError(f"counter names are dotted (group.name), not {name!r}")
        with self._lock:
            self._counts[name] = max(self._counts.get(name, int(value)), int(value))

    def get(self, name: str) -> int:
        """The counter ``name`` (0 if never added to)."""
        with self._lock:
            return self._counts[name]

    def group(self, prefix: str) -> int:
        """The sum of every counter in the group ``prefix``."""
        with self._lock:
            return sum(v for k, v in self._counts.items() if k.split(".", 1)[0] == prefix)

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the counters to ``path`` as JSON (atomically)."""
        target = Path(path)
        temp = target.with_name(target.name + ".tmp")
        temp.write_text(json.dumps(self.snapshot(), indent=2, sort_keys=True) + "\n")
        os.replace(temp, target)


#: The counters of this process.
FIGURES = Figures()


def _group(counts: dict[str, int], prefix: str) -> int:
    return sum(v for k, v in counts.items() if k.split(".", 1)[0] == prefix)


def _prefixed(counts: dict[str, int], prefix: str) -> int:
    return sum(v for k, v in counts.items() if k.startswith(prefix))


def summary(counts: dict[str, int], *, details: bool = True) -> str:
    """The human-readable report of ``counts`` (as written by :meth:`Figures.write`)."""

    def line(label: str, value: str) -> str:
        return f"  {label:<34} {value}"

    def number(value: int) -> str:
        return f"{value:,}"

    tests = (
        f"{number(counts.get('tests.passed', 0))} passed, "
        f"{number(counts.get('tests.failed', 0))} failed, "
        f"{number(counts.get('tests.xfailed', 0))} xfailed (known bugs), "
        f"{number(counts.get('tests.skipped', 0))} skipped"
    )
    rows = [
        "giosg_visitor reliability figures",
        line("tests", tests),
        line("trials run", number(_group(counts, "trials"))),
        line("faults injected", number(_group(counts, "faults"))),
        line("store faults injected", number(_prefixed(counts, "faults.store"))),
        line("frames fuzzed", number(counts.get("fuzz.frames", 0))),
        line("bodies fuzzed", number(counts.get("fuzz.bodies", 0))),
        line("messages checked", number(counts.get("messages.expected", 0))),
        line("messages lost", number(counts.get("messages.lost", 0))),
        line("duplicates", number(counts.get("messages.duplicates", 0))),
        line(
            "sends reported unknown",
            number(counts.get("messages.delivery_unknown", 0)),
        ),
        line(
            "refusals recovered",
            f"{number(counts.get('refusals.recovered', 0))} of "
            f"{number(counts.get('refusals.injected', 0))}",
        ),
        line("secrets checked", number(counts.get("secrets.checked", 0))),
        line("log records/texts scanned", number(_group(counts, "records"))),
        line("secrets leaked", number(counts.get("secrets.leaked", 0))),
        line("visitors ended by a fault", number(counts.get("visitors.ended_by_fault", 0))),
    ]
    if details:
        rows.append("  breakdown:")
        for group in ("trials", "faults"):
            for name, value in sorted(counts.items()):
                if name.split(".", 1)[0] == group:
                    rows.append(f"    {name:<40} {number(value)}")
    rows.extend(lifecycle_rows(counts))
    bad = [name for name in MUST_BE_ZERO + LIFECYCLE_MUST_BE_ZERO if counts.get(name, 0)]
    rows.append("  verdict: " + ("FAIL (" + ", ".join(bad) + " not 0)" if bad else "OK"))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Print the figures file given as the only argument; 1 if a must-be-zero is not."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.reliability.figures <figures.json>", file=sys.stderr)
        return 2
    path = Path(args[0])
    if not path.exists():
        print(f"no figures at {path} (did the test session start?)", file=sys.stderr)
        return 2
    counts = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    print(summary(counts))
    must_be_zero = MUST_BE_ZERO + LIFECYCLE_MUST_BE_ZERO
    return 1 if any(counts.get(name, 0) for name in must_be_zero) else 0


# Long-life figures: secret rotation, clock skew, event-loop blocking, the soak,
# cancellation. Kept apart from the figures above; peaks are recorded with
# Figures.maximum, sums with Figures.add.

#: Long-life counters that must stay at zero.
LIFECYCLE_MUST_BE_ZERO: Final = (
    "rotation.lost_grace",
    "rotation.unexplained_losses",
    "rotation.order_violations",
    "skew.expired_sends",
    "loop.slow_callbacks",
    "cancel.leaks",
)
#: The stores whose SIGKILL rotation trials are counted (``trials.rotation_kills.<store>``).
ROTATION_STORES: Final = ("file", "sqlite", "redis")
#: ``<this>.<store>.<n>``: how many "auth answer -> durable save" windows of a store's
#: rotation trials lasted from n to n + 1 tenths of a millisecond.
WINDOW_HISTOGRAM: Final = "rotation.save_window_100us"


def lifecycle_rows(counts: dict[str, int]) -> list[str]:
    """The summary lines of the long-life figures (none if no such test ran)."""
    names = (
        "rotation.",
        "skew.",
        "loop.",
        "soak.",
        "cancel.",
        "trials.rotation",
        "trials.skew_runs",
        "trials.soak_cycles",
    )
    if not any(name.startswith(names) for name in counts):
        return []

    def get(name: str) -> str:
        return f"{counts.get(name, 0):,}"

    def line(label: str, value: str) -> str:
        return f"  {label:<34} {value}"

    growth = counts.get("soak.rss_growth_permille", 0) / 10
    rows = ["  long-life checks:"]
    rows.extend(_rotation_rows(counts, line))
    if "trials.skew_runs" in counts:
        rows.append(
            line(
                "clock-skew runs",
                f"{get('trials.skew_runs')}; expired sends: {get('skew.expired_sends')}; "
                f"most extra renewals per restart: {get('skew.extra_renewals_max')}",
            )
        )
    if "loop.runs" in counts:
        rows.append(
            line(
                "slow callbacks (over 50 ms)",
                f"{get('loop.slow_callbacks')} from SDK code, "
                f"{get('loop.slow_callbacks_other')} elsewhere "
                f"({get('loop.runs')} watched tests)",
            )
        )
    if "trials.soak_cycles" in counts:
        rows.append(
            line(
                "soak",
                f"{get('trials.soak_cycles')} cycles; RSS growth {growth:.1f} %, "
                f"peak tasks {get('soak.peak_tasks')}, peak fds {get('soak.peak_fds')}, "
                f"dedupe window peak {get('soak.dedupe_peak')} "
                f"(capacity {get('soak.dedupe_capacity')})",
            )
        )
    if "trials.cancellations" in counts:
        rows.append(
            line(
                "cancellation trials",
                f"{get('trials.cancellations')}; leaks: {get('cancel.leaks')}",
            )
        )
    return rows


def _rotation_rows(counts: dict[str, int], line: Callable[[str, str], str]) -> list[str]:
    """Secret rotation: the in-process checks and the SIGKILL trials per store."""
    rows: list[str] = []

    def get(name: str) -> str:
        return f"{counts.get(name, 0):,}"

    if "trials.rotation_checks" in counts:
        rows.append(
            line(
                "rotation: requests checked",
                f"{get('trials.rotation_checks')} (newest secret stored before use)",
            )
        )
    kills = {store: f"trials.rotation_kills.{store}" for store in ROTATION_STORES}
    if not any(name in counts for name in kills.values()):
        return rows
    per_store = ", ".join(f"{store} {get(name)}" for store, name in kills.items())
    lost_strict = counts.get("rotation.lost_strict", 0)
    windows = []
    for store in ROTATION_STORES:
        histogram = {
            int(name.rsplit(".", 1)[1]): count
            for name, count in counts.items()
            if name.startswith(f"{WINDOW_HISTOGRAM}.{store}.")
        }
        if histogram:
            p50, p99 = (_histogram_percentile(histogram, share) for share in (0.5, 0.99))
            windows.append(f"{store} {p50:.1f} / {p99:.1f}")
    rows.extend(
        [
            line("rotation SIGKILL trials", per_store),
            line(
                "rotation visitors lost",
                f"grace {get('rotation.lost_grace')}, strict {lost_strict:,} "
                f"(explained {get('rotation.explained_losses')}, "
                f"unexplained {get('rotation.unexplained_losses')}); "
                f"order violations {get('rotation.order_violations')}",
            ),
            line(
                "rotation save window p50 / p99 ms",
                f"{', '.join(windows)} (answer -> durable save, "
                f"{get('rotation.save_windows')} renewals); "
                f"kills inside it {get('rotation.kills_in_save_window')}",
            ),
            line("rotation slowest restart", f"{get('rotation.slowest_restart_ms')} ms"),
        ]
    )
    return rows


def _histogram_percentile(histogram: dict[int, int], share: float) -> float:
    """The ``share`` percentile, in ms, of tenth-of-a-millisecond buckets (upper edges)."""
    total = sum(histogram.values())
    rank = min(total - 1, int(share * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return (bucket + 1) / 10
    raise AssertionError("unreachable: rank < total")


if __name__ == "__main__":
    raise SystemExit(main())
