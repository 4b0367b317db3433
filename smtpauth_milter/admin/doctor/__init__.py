"""``smtpauth-milter doctor``: check the installation the way an admin would.

Facts are collected at the edges (:mod:`.facts`: ``postconf``, ``postmap``,
``stat``, the store, one option negotiation on the socket); every check is a
pure function from facts to findings (:mod:`.checks`).
"""

from __future__ import annotations

from smtpauth_milter.admin import probe
from smtpauth_milter.admin.doctor.checks import (
    POSTFIX_PARAMS,
    Finding,
    check_local_domains,
    check_macros,
    check_milters,
    check_negotiation,
    check_socket_access,
    check_store,
    error,
    unix_path,
    warning,
)
from smtpauth_milter.admin.doctor.domains import check_domains
from smtpauth_milter.admin.doctor.facts import file_facts, mta_user, parent_facts, store_facts
from smtpauth_milter.admin.doctor.forwarding import ALIAS_PARAMS, check_forwarding
from smtpauth_milter.admin.doctor.grants import check_send_as_anyone
from smtpauth_milter.admin.doctor.limits import login_limit_findings
from smtpauth_milter.admin.doctor.maps import check_maps, different_config_dirs, map_facts
from smtpauth_milter.admin.doctor.running import running_findings
from smtpauth_milter.admin.milterproto.codec import Negotiated
from smtpauth_milter.admin.postfix import (
    default_config_dir,
    postconf,
    postfix_domains,
    postmap_has,
)
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.store.engine import Store


def diagnose(db: str, socket_spec: str, config_dir: str | None) -> list[Finding]:
    """Every check, in the order an admin would go through them.

    Postfix's configuration is read from ``config_dir``, else from the
    directory the milter's postmap reads (``postfix-config-dir``), else from
    Postfix's own default."""
    findings: list[Finding] = []
    store, domains = store_facts(db)
    findings.append(check_store(store))
    no_domains = check_local_domains(domains)
    if no_domains is not None:
        findings.append(no_domains)
    findings.extend(check_send_as_anyone(store.anyone))
    settings = _settings(db) if domains is not None else None
    if settings is not None:
        findings.extend(login_limit_findings(db))
    milter_dir = settings.postfix_config_dir if settings is not None else ""
    if config_dir and milter_dir and config_dir.rstrip("/") != milter_dir:
        findings.append(different_config_dirs(config_dir, milter_dir))
    try:
        directory = config_dir or milter_dir or default_config_dir()
        params = postconf(directory, (*POSTFIX_PARAMS, *ALIAS_PARAMS))
    except SmtpauthError as exc:
        findings.append(
            error(f"cannot read Postfix's configuration: {exc}", "pass --postfix-config DIR")
        )
        params = None
    if params is not None:
        findings.extend(check_milters(socket_spec, params))
        findings.append(check_macros(params["milter_mail_macros"], params["milter_protocol"]))
        findings.extend(_socket_findings(socket_spec, params["mail_owner"]))
        if domains is None:
            findings.append(
                warning("local domains not compared: the store cannot be read", "see above")
            )
        else:
            findings.extend(
                check_domains(
                    postfix_domains(params), domains, lambda k, t: postmap_has(directory, k, t)
                )
            )
    if settings is not None and domains is not None:
        postfix_maps = params.get("smtpd_sender_login_maps", "") if params else ""
        facts = map_facts(settings, domains)
        findings.extend(check_maps(facts, settings.sender_login_maps, postfix_maps))
    forwarding = check_forwarding(store.exempt, params) if params is not None else None
    findings.extend([forwarding] if forwarding is not None else [])
    try:
        result: Negotiated | str = probe.negotiate(socket_spec)
    except probe.ProbeError as exc:
        result = str(exc)
    findings.append(check_negotiation(socket_spec, result))
    if not isinstance(result, str):  # something answers: is it reading our store?
        findings.extend(running_findings(socket_spec, db))
    return findings


def _settings(db: str) -> Settings | None:
    """The global settings the milter decides with; None when the store cannot say."""
    store = Store(db)
    try:
        return store.load_snapshot().global_settings
    except SmtpauthError:
        return None
    finally:
        store.dispose()


def _socket_findings(socket_spec: str, owner: str) -> list[Finding]:
    user = mta_user(owner)
    if user is None:
        return [error(f"mail_owner {owner} is not a user here", "check Postfix's mail_owner")]
    path = unix_path(socket_spec)
    sock = file_facts(path) if path else None
    parents = parent_facts(path) if path else []
    return [check_socket_access(socket_spec, sock, parents, user)]
