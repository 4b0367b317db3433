"""Running the real parts for tests, benchmarks and the soak: one place, imported by all three.

``smtpauth_milter`` ships to users and holds none of this; ``tests`` may use
anything here, and so may ``bench`` (benchmarks and the soak), which never imports
from ``tests``.  Run everything from the repository root (pytest and
``python -m bench.NAME`` both put it on ``sys.path``).

- :mod:`tests.harness.milter`: start, wait for and stop any milter process (ours or a
  test double), its log, crash detection;
- :mod:`tests.harness.logfile`, :mod:`tests.harness.waiting`: a growing log to wait on,
  polling with a deadline;
- :mod:`tests.harness.pgserver`, :mod:`tests.harness.pgstatements`, :mod:`tests.harness.mariadb`: throwaway
  PostgreSQL (one of them counting statements) and MariaDB servers;
- :mod:`tests.harness.dnsserver`: a private unbound with test zones;
- :mod:`tests.harness.mta`: a private Postfix + Dovecot (SASL) and swaks.
"""
