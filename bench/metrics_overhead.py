"""In-process cost of the metrics on the decision path: ``python -m bench.metrics_overhead``."""

from __future__ import annotations

import time

from smtpauth_milter.core.policy import Action, Rule, Verdict
from smtpauth_milter.daemon.metrics import Metrics

ROUNDS = 200_000


def per_call(body: object) -> float:
    started = time.perf_counter()
    for _ in range(ROUNDS):
        body()  # type: ignore[operator]
    return (time.perf_counter() - started) / ROUNDS


def main() -> None:
    metrics = Metrics()
    verdict = Verdict(Action.CONTINUE, Rule.NON_LOCAL_SENDER)

    def timed() -> None:
        start = time.perf_counter()
        metrics.decided(verdict, time.perf_counter() - start)

    def timer_only() -> None:
        start = time.perf_counter()
        _ = time.perf_counter() - start

    with_metrics, baseline = per_call(timed), per_call(timer_only)
    print(f"metrics per decision: {(with_metrics - baseline) * 1e6:.2f} us "
          f"(with the two clock reads: {with_metrics * 1e6:.2f} us)")  # fmt: skip


if __name__ == "__main__":
    main()
