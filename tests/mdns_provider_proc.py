"""A test-only provider: drives ``MdnsAdvertiser`` from JSON lines on stdin (no HTTP server).

    python3 tests/mdns_provider_proc.py [--hostname H] [--advertise-host A] [--interface I]...

Commands, one JSON object per line; each answers one JSON line on stdout once the advertiser is
idle (registrations, renames and updates finished):
    {"op": "start", "offers": [{"channel": "stable", "arch": "arm64", "version": "1"}]}
    {"op": "update", "offers": [...]}        the complete new set
    {"op": "names"}                          -> {"names": {"stable/arm64": "phase-stable-arm64"}}
    {"op": "stop"}                           goodbye packets, then exit
The answer is {"ok": true, "names": {...}, "addresses": [...]} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phase_client.provider.advertise import Offer
from phase_client.provider.advertise_mdns import MdnsAdvertiser

IDLE_TIMEOUT = 60.0


def offers_from(items: list[dict[str, Any]], address: str) -> list[Offer]:
    offers = []
    for item in items:
        path = f"/{item['channel']}/{item['arch']}/manifest.json"
        offers.append(
            Offer(
                channel=item["channel"],
                arch=item["arch"],
                version=item.get("version", "1"),
                sequence=int(item.get("sequence", 1)),
                port=int(item.get("port", 8080)),
                manifest_path=path,
                manifest_url=f"http://{address}:{item.get('port', 8080)}{path}",
            )
        )
    return offers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hostname")
    parser.add_argument("--advertise-host")
    parser.add_argument("--interface", action="append")
    parser.add_argument("--watch-interval", type=float, help="rescan and tie-check period (s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    intervals = {}
    if args.watch_interval:
        intervals = {
            "rescan_interval": args.watch_interval,
            "tie_watch_interval": args.watch_interval,
        }
    advertiser = MdnsAdvertiser(
        advertise_host=args.advertise_host,
        interfaces=args.interface,
        hostname=args.hostname,
        **intervals,
    )
    started = False
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            if op in ("start", "update"):
                # Like plasmd serve without --advertise-host, the offer's URL names some address
                # of ours; the advertiser puts the announced interface's address in its place.
                offers = offers_from(command["offers"], "127.0.0.1")
                if started:
                    advertiser.update(offers)
                else:
                    advertiser.start(offers)
                    started = True
                if not advertiser.wait_idle(IDLE_TIMEOUT):
                    raise RuntimeError("advertiser not idle in time")
            elif op == "stop":
                advertiser.stop()
            reply = {
                "ok": True,
                "names": advertiser.instance_names(),
                "addresses": advertiser.addresses,
            }
        except Exception as exc:  # report to the test, keep serving commands
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if op == "stop":
            return 0
    advertiser.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
