"""Lookups of outside data (Postfix tables, SQL, DNS) for the daemon and the CLI.

Outside data is hostile and slow, so every lookup here runs on a small pool
of worker threads (:mod:`.runner`): a libmilter thread only waits for the
answer, and never longer than the lookup's deadline.  Answers are kept in a
bounded cache with a time to live (:mod:`.cache`).  A lookup that fails,
times out or finds the pool full raises :class:`~.runner.LookupFailed`, and
the caller fails closed (tempfail).
"""
