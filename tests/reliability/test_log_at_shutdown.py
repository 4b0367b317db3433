"""A real milter process under concurrent sessions, stopped at once: every decision line
is in the log exactly once, in each session's order, each one line, and ``event=stop``
comes last (the log writer thread is drained before the process exits)."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.harness.milter import ours
from tests.reliability.logcheck import parse_log
from tests.support.milterclient import session

THREADS, SESSIONS, RCPTS = 8, 25, 3


def test_every_decision_line_is_written_before_the_milter_exits(
    tmp_path: Path, store_url: str
) -> None:
    url = store_url
    failures: list[str] = []

    def client(n: int) -> None:
        try:
            for s in range(SESSIONS):
                # local unauthenticated (refused, WARNING) and remote (continue, INFO) senders
                sender = "<alice@example.com>" if s % 2 else f"<t{n}@remote.test>"
                rcpts = [f"<t{n}-s{s}-r{r}@remote.test>" for r in range(RCPTS)]
                result = session(milter.socket, sender=sender, rcpts=rcpts)
                assert len(result.rcpts) == RCPTS
        except Exception as exc:  # reported by the main thread
            failures.append(repr(exc))

    with ours(url, tmp_path / "milter.log").start(ready="loaded") as milter:
        workers = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert failures == []
        assert milter.stop() == 0  # SIGTERM right after the last reply
    lines = parse_log(milter.log.data())  # each one line, clean logfmt (logcheck)
    rcpts = [line.fields["rcpt"] for line in lines if "rcpt" in line.fields]
    expected = {
        f"<t{n}-s{s}-r{r}@remote.test>"
        for n in range(THREADS)
        for s in range(SESSIONS)
        for r in range(RCPTS)
    }
    assert len(rcpts) == len(expected) and set(rcpts) == expected
    for n in range(THREADS):  # one client's sessions run one after the other
        mine = [rcpt for rcpt in rcpts if rcpt.startswith(f"<t{n}-")]
        assert mine == [
            f"<t{n}-s{s}-r{r}@remote.test>" for s in range(SESSIONS) for r in range(RCPTS)
        ]
    assert lines[-1].fields.get("event") == "stop"
