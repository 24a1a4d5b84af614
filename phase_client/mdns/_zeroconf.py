"""The one place that uses python-zeroconf's private names (pinned in pyproject.toml).

python-zeroconf has no public API for three things this package does: sending a question of our
own (the one-shot QU query of ``browse``), reading TXT records from its cache (the tie check of
``register``) and dropping a registration without goodbye packets (an address that is gone). They
need names zeroconf does not export (``zeroconf.const._TYPE_PTR`` ..., ``DNSOutgoing``,
``DNSQuestion``, ``DNSText``, ``Zeroconf.registry``). They are used here and nowhere else, so a
zeroconf upgrade that renames one breaks this module and ``tests/test_dependency_contracts.py``
says which name, instead of a provider or a boot client failing at run time.
"""

from __future__ import annotations

from zeroconf import ServiceInfo, Zeroconf, current_time_millis
from zeroconf._dns import DNSQuestion, DNSText
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_PTR, _TYPE_TXT

# The names the contract test checks, with the values DNS gives them (RFC 1035: class IN = 1,
# PTR = 12, TXT = 16; a query has the QR bit clear).
CLASS_IN = _CLASS_IN
TYPE_PTR = _TYPE_PTR
TYPE_TXT = _TYPE_TXT
FLAGS_QR_QUERY = _FLAGS_QR_QUERY


def ptr_query(service_type: str, unicast: bool = True) -> DNSOutgoing:
    """One PTR question for ``service_type``, with the unicast-response (QU) bit if asked."""
    question = DNSQuestion(service_type, TYPE_PTR, CLASS_IN)
    question.unicast = unicast
    out = DNSOutgoing(FLAGS_QR_QUERY)
    out.add_question(question)
    return out


async def send_ptr_query(zc: Zeroconf, service_type: str) -> None:
    """Send a QU PTR question for ``service_type`` now, once ``zc`` has its sockets."""
    await zc.async_wait_for_start()
    zc.async_send(ptr_query(service_type))


def cached_txt(zc: Zeroconf, name: str) -> list[bytes]:
    """The rdata of every unexpired TXT record in ``zc``'s cache under ``name``.

    Call it in zeroconf's event-loop thread (the cache is not locked).
    """
    now = current_time_millis()
    return [
        record.text
        for record in zc.cache.async_all_by_details(name, TYPE_TXT, CLASS_IN)
        if isinstance(record, DNSText) and not record.is_expired(now)
    ]


def forget_registration(zc: Zeroconf, info: ServiceInfo) -> None:
    """Drop ``info`` from ``zc``'s registry without sending goodbye packets (loop thread)."""
    zc.registry.async_remove(info)
