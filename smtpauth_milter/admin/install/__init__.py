"""The production install on Debian 12: ``python3 -m smtpauth_milter.admin.install``.

It runs before the package's dependencies exist (from a clone, or straight out
of the wheel with the wheel on ``PYTHONPATH``), so it imports the standard
library only.  docs/operations.md#install-on-debian-12 describes what it does.
"""
