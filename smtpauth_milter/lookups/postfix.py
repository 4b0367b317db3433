"""A Postfix lookup table, asked through Postfix's own ``postmap -q -`` (batch mode).

One ``postmap`` process per lookup, never one per key: the keys go to its
stdin, one per line, and it prints ``key<TAB>value`` for each key it found.
Exit status 1 means "nothing found" *and* "error": an error is told apart by
``fatal:`` or ``warning:`` on stderr.  postmap reads the main.cf of the
Postfix instance named by ``postfix-config-dir`` (``postmap -c DIR``; empty:
Postfix's own default), so a table is read exactly as that Postfix reads it
(case folding, UTF-8, the SQL/LDAP clients).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from smtpauth_milter.core.ownermaps import MapSpec
from smtpauth_milter.lookups.keys import Probe

POSTMAP = "postmap"
_MAX_ERROR = 300


class MapError(Exception):
    """A map could not be read; the message is one line and holds no secret."""


def one_line(text: str) -> str:
    """The last non-empty line of a program's stderr, clipped (postmap's fatal: line)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    found = next((x for x in reversed(lines) if "fatal:" in x), lines[-1] if lines else "")
    return found[:_MAX_ERROR]


@dataclass
class PostfixTable:
    """``TYPE:NAME`` read with ``postmap``, with ``config_dir``'s main.cf ("" = the default)."""

    spec: MapSpec
    config_dir: str = ""
    postmap: str = POSTMAP

    @property
    def name(self) -> str:
        return self.spec.text

    def first(self, probes: Sequence[Probe], seconds: float) -> tuple[str, str] | None:
        """The first probe this table answers, as ``(key, value)``; None when none.

        postmap is given ``seconds`` at most, then killed (a MapError)."""
        keys = [p.key for p in probes if not (p.partial and self.spec.pattern)]
        if not keys:
            return None
        answers = self.query(keys, seconds)
        for key in keys:
            if key in answers:
                return key, answers[key]
        return None

    def query(self, keys: Sequence[str], seconds: float) -> dict[str, str]:
        """Every key postmap found, with its value (verbatim)."""
        config = ["-c", self.config_dir] if self.config_dir else []
        try:
            done = subprocess.run(
                [self.postmap, *config, "-q", "-", self.spec.text],
                input="".join(f"{k}\n" for k in keys).encode(),
                capture_output=True, timeout=seconds, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise MapError(f"postmap gave no answer within {seconds:.2g} s") from None
        except OSError as exc:
            raise MapError(f"cannot run {self.postmap}: {exc.strerror or exc}") from None
        stderr = done.stderr.decode("utf-8", "replace")
        troubled = "fatal:" in stderr or (done.returncode != 0 and "warning:" in stderr)
        if done.returncode not in (0, 1) or troubled:
            raise MapError(one_line(stderr) or f"postmap exited {done.returncode}")
        return _parse_batch(done.stdout.decode("utf-8", "replace"), keys)


def _parse_batch(output: str, keys: Sequence[str]) -> dict[str, str]:
    wanted = set(keys)
    answers: dict[str, str] = {}
    for line in output.splitlines():
        key, tab, value = line.partition("\t")
        if not tab or key not in wanted:
            continue
        if not value:
            # Postfix refuses an empty value ("Server configuration error", 451 4.3.5)
            raise MapError(f"empty value for {key!r}: Postfix treats it as a configuration error")
        answers[key] = value
    return answers
