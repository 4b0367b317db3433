"""The order of the collection: each slow module at the head of its own worker's share.

``--dist worksteal`` first splits the collection into one contiguous share per
worker, in order (the first ``len // n`` tests to the first worker, and so on),
and an idle worker later steals the *tail* of the longest queue.  The slow
modules (tens of seconds to minutes each: the system install, the differential
against Postfix's own maps, 200 crashes, two Postfix hosts) must therefore start
at the head of different shares: sorted first as one block, they were all in the
first worker's share and ran there one after the other (about 370 of the run's
400 s), while the tests around them were stolen.

Each slow module goes, whole and in its own order (its module-scoped fixtures
are started once), to the share with the least slow work so far, heaviest first;
the other tests keep their order and fill the shares.  Without workers (``-n 0``)
the slow modules simply come first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Module (or directory) prefix and its seconds in a whole run on 2 cores (measured).
SLOW_MODULES: tuple[tuple[str, float], ...] = (
    ("tests/integration/test_login_maps_differential.py", 160.0),
    ("tests/system/", 100.0),
    ("tests/reliability/test_crash_and_restart.py", 60.0),
    ("tests/integration/test_login_two_hosts_postfix.py", 30.0),
)


def shares(total: int, workers: int) -> list[int]:
    """How many tests each worker gets first, as worksteal splits ``total``."""
    sizes = []
    for index in range(workers):
        size = total // (workers - index)
        sizes.append(size)
        total -= size
    return sizes


def slow_first(
    items: Sequence[T],
    nodeid: Callable[[T], str],
    workers: int,
    slow: Sequence[tuple[str, float]] = SLOW_MODULES,
) -> list[T]:
    """``items`` reordered for ``workers`` workers (0 or 1: the slow modules first)."""
    groups: list[list[T]] = [[] for _ in slow]
    rest: list[T] = []
    for item in items:
        name = nodeid(item)
        found = next((i for i, (prefix, _) in enumerate(slow) if name.startswith(prefix)), None)
        (rest if found is None else groups[found]).append(item)
    workers = max(1, workers)
    heads: list[list[T]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for index in sorted(range(len(slow)), key=lambda i: -slow[i][1]):
        if groups[index]:
            lightest = min(range(workers), key=lambda w: load[w])
            heads[lightest].extend(groups[index])
            load[lightest] += slow[index][1]
    ordered: list[T] = []
    fill = iter(rest)
    for head, size in zip(heads, shares(len(items), workers), strict=True):
        ordered.extend(head)
        ordered.extend(itertools.islice(fill, max(0, size - len(head))))
    ordered.extend(fill)
    return ordered
