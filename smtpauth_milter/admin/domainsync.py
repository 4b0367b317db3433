"""``domain sync --from-postfix``: make the local domains those Postfix delivers for.

:func:`plan` is pure: Postfix's listable domains against the store's.  A store
domain Postfix does not list is only "gone" when every table Postfix could not
list was asked (``postmap -q``) and does not have it either; when a table
cannot be asked, the domain is kept.  :func:`apply` makes the change in one
audited transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from smtpauth_milter.admin import postfix
from smtpauth_milter.admin.postfix import PostfixDomains
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.store import audit, editing


@dataclass(frozen=True)
class SyncPlan:
    add: tuple[tuple[str, str], ...]  # (domain, the Postfix parameter naming it)
    gone: tuple[str, ...]  # local domains Postfix no longer has
    unsure: tuple[str, ...]  # not listed, but some lookup table could not be asked
    postfix: PostfixDomains

    def changes(self, remove: bool) -> bool:
        return bool(self.add or (remove and self.gone))


def plan(
    postfix: PostfixDomains, local: Iterable[str], in_table: Callable[[str, str], bool | None]
) -> SyncPlan:
    """``in_table(domain, table)``: found, not found, or None (cannot tell)."""
    ours = set(local)
    add = tuple(
        (name, param) for name, param in sorted(postfix.domains.items()) if name not in ours
    )
    gone: list[str] = []
    unsure: list[str] = []
    for name in sorted(ours - set(postfix.domains)):
        hits = [in_table(name, table) for table, _ in postfix.lookups]
        if any(hits):
            continue
        (unsure if None in hits else gone).append(name)
    return SyncPlan(add, tuple(gone), tuple(unsure), postfix)


def from_postfix(snapshot: Snapshot, config_dir: str | None = None) -> tuple[str, SyncPlan]:
    """The plan against the Postfix of ``config_dir``, else of the postfix-config-dir
    setting, else Postfix's default (``domain sync`` and the console's Domains page)."""
    milter_dir = snapshot.global_settings.postfix_config_dir
    directory = config_dir or milter_dir or postfix.default_config_dir()
    params = postfix.postconf(directory, postfix.LOCAL_DOMAIN_PARAMS)
    found = postfix.postfix_domains(params, postfix.LOCAL_DOMAIN_PARAMS)
    local = sorted(snapshot.domains)
    return directory, plan(found, local, lambda k, t: postfix.postmap_has(directory, k, t))


def apply(session: Session, sync: SyncPlan, remove: bool, source: str) -> tuple[int, int]:
    """Add (and with ``remove``, remove) the planned domains; (added, removed).

    Against the store as it is inside this transaction: a domain added or
    removed by someone else since the plan is left as it is now.
    """
    current = set(editing.list_domains(session))
    added = editing.add_domains(session, [name for name, _ in sync.add if name not in current])
    removed = [name for name in sync.gone if name in current] if remove else []
    editing.remove_domains(session, removed)
    counts = f"{len(added)} added, {len(removed)} removed"
    audit.record(session, "domain-sync", source, new=counts)
    return len(added), len(removed)


def report(sync: SyncPlan, remove: bool, dry_run: bool) -> list[str]:
    """The lines ``domain sync`` prints: the difference, then what it could not read."""
    added = "would add" if dry_run else "added"
    lines = [f"{added} {name} ({param})" for name, param in sync.add]
    for name in sync.gone:
        if remove:
            lines.append(f"{'would remove' if dry_run else 'removed'} {name}")
        else:
            lines.append(f"not in Postfix: {name} (kept; --remove removes it)")
    lines += [
        f"kept {name}: Postfix does not list it and some lookup tables could not be asked"
        for name in sync.unsure
    ]
    lines += [
        f"cannot list {table} ({param}): add its domains with smtpauth-milter domain add"
        for table, param in sync.postfix.lookups
    ]
    lines += [
        f"skipped {token} ({param}): not a domain name" for token, param in sync.postfix.skipped
    ]
    if not sync.add:
        lines.append("nothing to add: every domain Postfix lists is a local domain")
    return lines
