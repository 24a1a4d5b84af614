"""``plasmd status [URL]``: what a running ``plasmd serve`` offers, from its ``/status``.

Top-level imports stay light: ``plasmd --help`` imports this module.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import EXIT_OK, exit_codes_help

DEFAULT_URL = "http://127.0.0.1:8080/"
EPILOG = (
    """Asks URL/status (default """
    + DEFAULT_URL
    + """) and prints it for a person: name, keys, what is offered,
pending, missing or refused, the advertisers and the counters. --json prints the document as
the server sent it, inside the usual envelope ({"ok": true, "status": {...}}).

"""
    + exit_codes_help(
        {2: "bad URL or timeout", 3: "no plasmd answered at URL"}, codes=(0, 2, 3, 70, 130)
    )
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import seconds

    parser.add_argument(
        "url", nargs="?", default=DEFAULT_URL, metavar="URL", help=f"default {DEFAULT_URL}"
    )
    parser.add_argument(
        "--timeout", type=seconds(300), default=10.0, metavar="S", help="default 10 seconds"
    )
    parser.add_argument("--json", action="store_true", help="print /status as JSON")


def status_url(url: str) -> str:
    import urllib.parse

    from ..errors import UsageError

    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) URL of a plasmd: {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise UsageError(f"bad port in {url!r}") from exc
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/status", "", ""))


def fetch_status(url: str, timeout: float) -> dict[str, Any]:
    import json
    import urllib.error
    import urllib.request

    from ..errors import NoSourceError

    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a direct ask
        with opener.open(url, timeout=timeout) as response:
            document = json.loads(response.read(1 << 22))
    except urllib.error.HTTPError as exc:
        raise NoSourceError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        text = getattr(reason, "strerror", None) or str(reason)
        raise NoSourceError(f"no plasmd answered at {url}: {text}") from exc
    except ValueError as exc:
        raise NoSourceError(f"{url} did not answer JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise NoSourceError(f"{url} did not answer a status document")
    return document


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover - the loop returns


def describe(status: dict[str, Any]) -> str:
    """The status document for a person."""
    lines = [
        f"plasmd {status.get('name', '?')}  {status.get('url', '?')}  "
        f"up {duration(float(status.get('uptime_s', 0)))}",
        f"keyid    {status.get('keyid', '?')}",
        f"peer id  {status.get('peer_id', '?')}",
    ]
    offered = status.get("offered") or []
    lines.append(f"offered  {len(offered)}" + (":" if offered else ""))
    for offer in offered:
        combination = f"{offer.get('channel')}/{offer.get('arch')}"
        mark = "  (default)" if combination == status.get("default") else ""
        lines.append(
            f"  {combination:<20} version {offer.get('version')}  "
            f"sequence {offer.get('sequence')}  expires {offer.get('expires_at')}  "
            f"{', '.join(offer.get('artifacts', []))}"
            f"{'  mirror' if offer.get('mirror') else ''}{mark}"
        )
    for combination, files in sorted((status.get("pending") or {}).items()):
        lines.append(f"pending  {combination} ({files} still changing)")
    if status.get("missing"):
        lines.append(f"missing  {', '.join(status['missing'])}")
    for combination, reason in sorted((status.get("rejected") or {}).items()):
        lines.append(f"refused  {combination}: {reason}")
    lines.append(f"adverts  {', '.join(status.get('advertisers') or []) or 'none'}")
    lines.append(
        f"served   {status.get('requests', 0)} requests, "
        f"{size(float(status.get('bytes_served', 0)))}, "
        f"{status.get('active_transfers', 0)} transfers now"
    )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from ._common import emit

    document = fetch_status(status_url(args.url), args.timeout)
    emit(args, {"status": document}, describe(document))
    return EXIT_OK
