"""phase-boot: discover, fetch and verify, stage, and hand off to kexec, in one process."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ..errors import (
    EXIT_OK,
    NoSourceError,
    PhaseError,
    StageError,
    UsageError,
)
from ..hostport import split_contacts
from ._common import (
    Parser,
    add_source_arguments,
    add_verbosity,
    bootstrap_contacts,
    exit_codes_help,
    failure_of,
    print_json,
    report,
    run,
    seconds,
    setup_logging,
    success,
)
from ._trust import add_trust_arguments, root_from_args, state_from_args

if TYPE_CHECKING:
    from typing import Any

    from ..boot.orchestrate import Booter, Staged
    from ..fetch.result import FetchResult

PROG = "phase-boot"
START_WHEN_TIMEOUT = 300.0

EPILOG = """steps (each the code of the tool named; docs/boot.md):
  1. discover   without --manifest: mDNS, then the DHT (phase-discover --list)
  2. fetch      walk the root chain; verify the manifest (signatures, expiry, channel/arch,
                rollback state) before any artifact byte is asked for; without --output,
                refuse unless MemAvailable covers the image and kexec's copies, make the new
                private directory PRIVDIR (0700) and stream each artifact straight into it,
                hashed as it arrives; with --output DIR, into DIR; record the rollback state
                (phase-fetch)
  3. stage      without --output: nothing is read again: the fetched kernel and initramfs are
                what kexec loads (a rootfs is folded into PRIVDIR/initrd.img with the
                initramfs, hashed again as it is copied). With --output DIR: refuse unless
                MemAvailable covers the copies and kexec's; copy into PRIVDIR every byte
                kexec loads, hashed as it is copied and compared with the verified manifest
                (phase-verify --check-dir --stage-into)
  4. hand off   exec kexec-boot --kernel PRIVDIR/kernel --initrd PRIVDIR/initramfs (or
                PRIVDIR/initrd.img; with --output, PRIVDIR/initrd) --cmdline '<staged command
                line>': kexec -s (else -l), sync, kexec -e. kexec-boot is taken from PATH,
                else from beside this program

Only one interpreter starts: what kexec loads was hashed by this process, in a directory
nobody else can write, so kexec-boot does not start phase-verify again. If kexec-boot fails,
PRIVDIR is left for the caller to remove (the initramfs's init does); on any failure before,
this program removes it.

""" + exit_codes_help(
    {
        0: "--dry-run or --stage-only: every check passed (a real boot does not return)",
        1: "verification or integrity failure; or kexec-boot failed to load the kernel",
        2: "usage error, unreadable keys, DIR or PRIVDIR cannot be written, not enough memory",
        3: "no provider found, or no source reachable",
    }
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Boot from the network in one process: find a provider (mDNS, then the "
        "DHT) unless --manifest is given, fetch and verify its signed manifest and artifacts "
        "(as phase-fetch) straight into a new private directory, hashed as they arrive, and "
        "exec kexec-boot on those files.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="URL|PATH",
        help="manifest URL or file; repeat for alternative providers (default: discover them)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="fetch the artifacts into DIR (as phase-fetch), then copy what kexec loads into "
        "PRIVDIR, hashed again (default: fetch straight into PRIVDIR, hashed once as it "
        "arrives, nothing copied)",
    )
    add_trust_arguments(parser)
    found = parser.add_argument_group("discovery (without --manifest)")
    add_source_arguments(
        found, "where to look (default auto: mDNS, then the DHT)", "DHT bootstrap node; repeatable"
    )
    found.add_argument(
        "--discover-timeout",
        type=seconds(3600),
        default=10.0,
        metavar="S",
        help="seconds to search (default 10)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(),
        default=20.0,
        metavar="S",
        help="fetch: seconds without a byte before a connection counts as cut (default 20)",
    )
    staging = parser.add_argument_group("staging and hand-off")
    staging.add_argument(
        "--stage-into",
        metavar="PRIVDIR",
        help="the private directory to create (0700; it must not exist; default a new "
        "random name under $TMPDIR, else /run, else /tmp)",
    )
    staging.add_argument(
        "--consume",
        action="store_true",
        help="with --output: remove DIR's artifact files once staged (RAM holds the image "
        "three times, not four); without: remove the artifacts folded into PRIVDIR/initrd.img (a "
        "rootfs) once it is built. The memory check counts their room as freed",
    )
    staging.add_argument(
        "--meminfo",
        metavar="FILE",
        default="/proc/meminfo",
        help="where MemAvailable is read (default /proc/meminfo)",
    )
    staging.add_argument(
        "--umount",
        metavar="DIR",
        help="unmount DIR (the state device's mount point) once the rollback state is "
        "written, before kexec",
    )
    staging.add_argument(
        "--append", action="append", default=[], metavar="ARGS", help="kexec-boot --append ARGS"
    )
    staging.add_argument(
        "--kexec-boot",
        metavar="PATH",
        help="the kexec-boot to exec (default: from PATH, else beside this program)",
    )
    staging.add_argument(
        "--dry-run",
        action="store_true",
        help="everything but the load: run kexec-boot --dry-run on the staged copies (it "
        "prints the kexec commands), then remove them",
    )
    staging.add_argument(
        "--stage-only",
        action="store_true",
        help="stop after staging: print PRIVDIR (and leave it) instead of handing off",
    )
    parser.add_argument(
        "--start-when",
        metavar="FILE",
        help="import what discovery needs (while still waiting: the fetch side, then in auto "
        "mode the DHT's modules), then wait until FILE exists (5 min at most; the caller brings "
        "the network up meanwhile): 'go' in it starts the boot (discovery first, the root of "
        "trust loaded while it runs), anything else ends this run with exit 0 and no output "
        "(the initramfs's init: start-up overlaps DHCP)",
    )
    parser.add_argument(
        "--link-first",
        action="store_true",
        help="with --start-when and discovery by mDNS: as soon as an interface has a usable "
        "IPv6 link-local address, before the go, ask the link by mDNS once and boot from a "
        "provider that answers and is reachable there; else wait for the go as without it "
        "(the initramfs's init: a provider on the link needs no DHCP lease)",
    )
    parser.add_argument(
        "--init-lines",
        action="store_true",
        help="print each step on stdout as the initramfs's init prints its own: "
        "'[UPTIME] phase: MESSAGE' (seconds since boot, from /proc/uptime)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --dry-run or --stage-only: print a JSON summary on stdout",
    )
    add_verbosity(parser)
    return parser


class Console:
    """Step lines: stage 1's own form with --init-lines, else INFO log lines."""

    def __init__(self, init_lines: bool, quiet: bool, uptime: str = "/proc/uptime") -> None:
        self.init_lines = init_lines
        self.quiet = quiet
        self.uptime = uptime

    def _stamp(self) -> str:
        try:
            with open(self.uptime, encoding="ascii") as f:
                return f.read().split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            return "?"

    def __call__(self, message: str) -> None:
        if self.init_lines:
            sys.stdout.write(f"[{self._stamp():>12}] phase: {message}\n")
            sys.stdout.flush()
        elif not self.quiet:
            sys.stderr.write(f"{PROG}: {message}\n")
            sys.stderr.flush()


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C: part files and a half-made PRIVDIR are removed on the way.
    raise KeyboardInterrupt


def _summary(result: FetchResult, staged: Staged) -> dict[str, Any]:
    """The --json fields of a staged boot: the fetch's and the stage's. An artifact whose
    fetched file --consume removed is named by no file (``"file": null``)."""
    fields = result.to_json()
    for name in staged.consumed:
        fields["artifacts"][name]["file"] = None
    return {**fields, "stage": staged.to_json()}


def _failed(args: argparse.Namespace, say: Console, exc: PhaseError, line: str) -> int:
    report(PROG, args, failure_of(exc), f"{PROG}: {exc}")
    say(f"ERROR {line}")
    return exc.exit_code


def _unmount(directory: str) -> None:
    import subprocess

    result = subprocess.run(
        ["umount", directory], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["?"])[-1]
        sys.stderr.write(f"{PROG}: warning: cannot unmount {directory}: {why}\n")


def handle(args: argparse.Namespace) -> int:
    from ..boot.handoff import find_kexec_boot
    from ..boot.orchestrate import (
        AFTER_DISCOVERY,
        Booter,
        BootRequest,
        Discovery,
        preload,
        preload_plan,
    )
    from ..names import host_arch
    from .fetch import check_location, check_output

    setup_logging(args.verbose, args.quiet)
    manifests = [check_location(m, "--manifest") for m in args.manifest]
    if manifests and (args.bootstrap or args.source != "auto"):
        raise UsageError("--source and --bootstrap are for discovery, not with --manifest")
    if args.output:
        check_output(args.output)
    if args.json and not (args.dry_run or args.stage_only):
        raise UsageError("--json goes with --dry-run or --stage-only (a boot does not return)")
    if args.link_first and not args.start_when:
        raise UsageError("--link-first goes with --start-when (it starts before the go)")
    if args.dry_run and args.stage_only:
        raise UsageError("give --dry-run or --stage-only, not both")
    if args.stage_into and os.path.lexists(args.stage_into):
        raise UsageError(f"--stage-into {args.stage_into}: exists (the directory must be new)")
    bootstrap = bootstrap_contacts(args) if not manifests else []
    contacts, multiaddrs = split_contacts(bootstrap)
    if args.source == "dht" and not contacts:
        raise UsageError("--source dht needs --bootstrap HOST:PORT (or phase.bootstrap=)")
    if args.source == "libp2p" and not multiaddrs:
        raise UsageError(
            "--source libp2p needs --bootstrap /ip4/A/tcp/P/p2p/ID (or phase.bootstrap=)"
        )
    program = None
    if not args.stage_only:
        program = args.kexec_boot or find_kexec_boot(sys.argv[0])
        if program is None:
            raise UsageError("kexec-boot not found in PATH nor beside this program (--kexec-boot)")
    channel = args.channel or "stable"
    arch = args.arch or host_arch()
    say = Console(args.init_lines, args.quiet)
    signal.signal(signal.SIGTERM, _terminate)
    running = None
    network = "go"
    if args.start_when:
        # Before the go: what discovery needs. While waiting: the rest, as far as it gets.
        needed, idle = preload_plan(discover=not manifests, source=args.source)
        preload(needed)
        loaded = time.monotonic()
        # A provider on the link may be asked before DHCP is done (docs/boot.md).
        link_first = args.link_first and not manifests and args.source in ("auto", "mdns")
        network = _wait_for_network(args.start_when, idle, link_first)
        if network == "stop":
            return EXIT_OK
        if network == "link":
            from ..mdns.interfaces import usable_link_local

            for name, address in usable_link_local()[:1]:
                say(f"link up: {name} {address}")
        # For the boot's timeline: which came last, Python's start-up or the network.
        waited = time.monotonic() - loaded
        when = f", {waited:.2f} s before the network" if waited >= 0.1 else " (the network first)"
        what = "discovery's" if not manifests else "the boot's"
        say(f"loaded: {what} modules imported{when}")
        if not manifests:
            # Discovery first: the root of trust and the fetch side load while it waits.
            from ..discovery.model import Query

            query = Query(channel=channel, arch=arch, timeout=args.discover_timeout)
            if network == "link":  # one look at the link, over IPv6 link-local: mDNS only
                running = Discovery(query, source="mdns", until_quiet=True).start()
            else:
                running = Discovery(query, source=args.source, bootstrap=bootstrap).start()

    from ..fetch.download import Settings

    request = BootRequest(
        channel=channel,
        arch=arch,
        output=Path(args.output) if args.output else None,
        start=root_from_args(args),
        manifests=manifests,
        state=state_from_args(args),
        source=args.source,
        bootstrap=bootstrap,
        discover_timeout=args.discover_timeout,
        settings=Settings(connect_timeout=min(5.0, args.timeout / 4), read_timeout=args.timeout),
        stage=Path(args.stage_into) if args.stage_into else None,
        meminfo=Path(args.meminfo),
        consume=args.consume,
    )
    booter = Booter(request, say)
    if running is not None:
        preload(AFTER_DISCOVERY)
    gc.enable()  # the boot's modules are in (what a boot without --start-when imports later)
    if network == "link":
        manifests = booter.discover(running, must_find=False)
        if not manifests:
            say("nobody answered on the link yet: waiting for DHCP")
            if _wait_for_network(args.start_when, (), link_first=False) == "stop":
                return EXIT_OK
            running = Discovery(query, source=args.source, bootstrap=bootstrap).start()
    if not manifests:
        try:
            manifests = booter.discover(running)
        except NoSourceError as exc:
            return _failed(args, say, exc, str(exc))
    try:
        return _fetch_stage_hand_off(args, booter, manifests, program, say)
    except BaseException:  # a signal, a closed stdout: nothing fetched is left behind
        booter.discard()
        raise


def _wait_for_network(path: str, idle: Sequence[str], link_first: bool) -> str:
    """``boot.orchestrate.wait_for_network`` on --start-when's file (with ``link_first``, a
    usable link-local address ends the wait too); NoSourceError when nothing came."""
    from ..boot.orchestrate import wait_for_network

    link: Callable[[], object] | None = None
    if link_first:  # a boot with --manifest never loads the interfaces' module
        from ..mdns.interfaces import usable_link_local

        link = usable_link_local
    try:
        return wait_for_network(Path(path), START_WHEN_TIMEOUT, idle=idle, link=link)
    except TimeoutError as exc:
        raise NoSourceError(f"--start-when: {exc}") from None


def _fetch_stage_hand_off(
    args: argparse.Namespace,
    booter: Booter,
    manifests: list[str],
    program: str | None,
    say: Console,
) -> int:
    """Steps 2-4 (a failure of fetch or stage has removed what it made; a real boot does not
    return)."""
    from ..boot.handoff import kexec_boot_argv

    try:
        result = booter.fetch(manifests)
    except StageError as exc:  # PRIVDIR or the memory check, before the first artifact byte
        return _failed(args, say, exc, f"refusing to boot: {exc}")
    except PhaseError as exc:
        return _failed(args, say, exc, f"fetch from {' '.join(manifests)} failed")
    try:
        if args.umount:
            _unmount(args.umount)
        staged = booter.stage(result)
    except PhaseError as exc:
        return _failed(args, say, exc, f"refusing to boot: {exc}")

    if args.stage_only:
        if args.json:
            print_json(success(_summary(result, staged)))
        elif not args.quiet:
            sys.stdout.write(f"{staged.directory}\n")
        return EXIT_OK
    assert program is not None
    argv = kexec_boot_argv(program, staged, append=args.append, dry_run=args.dry_run)
    if args.dry_run:
        import shutil
        import subprocess

        try:
            # kexec-boot's commands go to stderr under --json: stdout is the summary's.
            out = sys.stderr if args.json else sys.stdout
            out.flush()
            code = subprocess.run(argv, stdout=out, stdin=subprocess.DEVNULL, check=False)
        finally:
            shutil.rmtree(staged.directory, ignore_errors=True)
        if args.json and code.returncode == 0:
            print_json(success({**_summary(result, staged), "kexec_boot": argv}))
        return code.returncode
    say(f"kexec: booting {result.verified.manifest.cmdline or ''}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(program, argv)
    except OSError as exc:
        import shutil

        shutil.rmtree(staged.directory, ignore_errors=True)
        error = UsageError(f"cannot run {program}: {exc.strerror or exc}")
        return _failed(args, say, error, f"kexec-boot failed ({exc.strerror or exc})")
    return EXIT_OK  # not reached: execv does not return


def main(argv: list[str] | None = None) -> int:
    # The collector stays off until the boot's modules are imported (cli.run_tool says why;
    # handle turns it on then), and is put back as it was whatever happens.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return run(PROG, build_parser(), handle, argv)
    finally:
        if collecting:
            gc.enable()
        else:
            gc.disable()
