#!/usr/bin/env python3
"""Man pages and bash completion, generated from the commands' own argparse parsers.

    scripts/gen-manpages.py [--out DIR]      write DIR/man/*.1|*.8 and DIR/bash-completion/phase
    scripts/gen-manpages.py --check [--out DIR]   exit 1 (naming the files) if they are stale

One page per command and subcommand (``plasmd-serve.8``, ``phase-fetch.1``); the synopsis,
options, help texts and the epilog (exit codes included) are the ones ``--help`` prints. The
output depends on nothing but the parsers: no date, a fixed width. ``make man`` runs it;
tests/test_plasmd_manpages.py fails when the checked-in files differ from what it writes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ["COLUMNS"] = "100"  # argparse wraps usage lines to the terminal: fix the width
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import phase_client.names  # noqa: E402
from phase_client import __version__  # noqa: E402
from phase_client.cli import TOOLS  # noqa: E402

# Help texts that name this machine's arch read as on an x86_64 host, wherever this runs.
phase_client.names.host_arch = lambda: "x86_64"

DEFAULT_OUT = REPO / "packaging"
COMPLETION = "bash-completion/phase"
PROGRAMS = {
    "verify": "phase-verify",
    "fetch": "phase-fetch",
    "discover": "phase-discover",
    "boot": "phase-boot",
}
FILE_WORDS = ("FILE", "PRIVDIR", "KEY", "PATH")
DIR_WORDS = ("DIR",)


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command path, parser) for every command and subcommand, parents first."""
    for name, module_name in TOOLS.items():
        parser = importlib.import_module(module_name).build_parser()
        parser.prog = PROGRAMS.get(name, name)
        yield from walk(parser.prog, parser)


def walk(
    path: str, parser: argparse.ArgumentParser
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(f"{path} {name}", sub)


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found += [(name, helps.get(name, "")) for name in action.choices]
    return found


def section(path: str) -> int:
    return 8 if path.startswith("plasmd") else 1


def page_name(path: str) -> str:
    return path.replace(" ", "-")


def roff(text: str) -> str:
    """Text safe in a roff line: backslashes, dashes, and a leading dot or quote escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    text = formatter._expand_help(action) if action.help else ""
    return " ".join(text.split())


def option_label(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"\\fI{roff(str(action.metavar or action.dest))}\\fR"
    names = ", ".join(f"\\fB{roff(o)}\\fR" for o in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
    )
    return f"{names} \\fI{roff(str(metavar))}\\fR"


def man_page(path: str, parser: argparse.ArgumentParser) -> str:
    name = page_name(path)
    sect = section(path)
    summary = " ".join((parser.description or path).split()).rstrip(".")
    lines = [
        f'.TH "{name.upper()}" "{sect}" "" "phase-client {__version__}" "phase-client manual"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary[:1].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        ".nf",
        roff(parser.format_usage().removeprefix("usage: ").rstrip()),
        ".fi",
    ]
    if parser.description:
        lines += [".SH DESCRIPTION", roff(" ".join(parser.description.split()))]
    commands = subcommands(parser)
    if commands:
        lines.append(".SH COMMANDS")
        for command, help_text in commands:
            page = page_name(f"{path} {command}")
            lines += [
                ".TP",
                f"\\fB{roff(command)}\\fR",
                f"{roff(help_text)}; see \\fB{roff(page)}\\fR({section(path)}).",
            ]
    options = [a for a in parser._actions if not isinstance(a, argparse._SubParsersAction)]
    if options:
        lines.append(".SH OPTIONS")
        for action in options:
            if action.help == argparse.SUPPRESS:
                continue
            lines += [".TP", option_label(action), roff(option_help(parser, action))]
    if parser.epilog:
        lines += [".SH NOTES", ".nf", roff(parser.epilog.rstrip()), ".fi"]
    parent = path.rsplit(" ", 1)[0] if " " in path else None
    if parent is not None:
        lines += [".SH SEE ALSO", f"\\fB{roff(page_name(parent))}\\fR({section(parent)})"]
    return "\n".join(lines) + "\n"


def value_kind(action: argparse.Action) -> str | None:
    """What follows an option on the command line, for completion: None (nothing), a word
    list, ``@file``, ``@dir`` or ``@any``."""
    if not action.option_strings or action.nargs == 0:
        return None
    if action.choices:
        return " ".join(map(str, action.choices))
    metavar = str(action.metavar or action.dest).upper()
    if any(word in metavar for word in DIR_WORDS):
        return "@dir"
    if any(word in metavar for word in FILE_WORDS):
        return "@file"
    return "@any"


def bash_completion(commands: list[tuple[str, argparse.ArgumentParser]]) -> str:
    subs, opts, args = {}, {}, {}
    for path, parser in commands:
        names = [name for name, _ in subcommands(parser)]
        if names:
            subs[path] = " ".join(names)
        flags = [o for a in parser._actions for o in a.option_strings]
        opts[path] = " ".join(flags)
        for action in parser._actions:
            kind = value_kind(action)
            if kind is not None:
                for option in action.option_strings:
                    args[f"{path} {option}"] = kind

    def table(name: str, values: dict[str, str]) -> list[str]:
        rows = [f'    ["{key}"]="{value}"' for key, value in values.items()]
        return [f"declare -gA {name}=(", *rows, ")"]

    programs = sorted({path.split(" ")[0] for path, _ in commands})
    lines = [
        "# bash completion for phase-client's commands (plasmd, phase-fetch, phase-verify,",
        "# phase-discover). Generated by scripts/gen-manpages.py from the argparse parsers:",
        "# do not edit; run make man.",
        "# shellcheck shell=bash",
        *table("_phase_subcommands", subs),
        *table("_phase_options", opts),
        *table("_phase_values", args),
        "_phase_complete() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    local path=${COMP_WORDS[0]##*/} i word",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        word=${COMP_WORDS[i]}",
        '        if [[ " ${_phase_subcommands[$path]-} " == *" $word "* ]]; then',
        '            path="$path $word"',
        "        fi",
        "    done",
        '    local kind=${_phase_values["$path $prev"]-}',
        "    if [[ -n $kind ]]; then",
        "        case $kind in",
        '            @file) mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;',
        '            @dir) mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;',
        "            @any) COMPREPLY=() ;;",
        '            *) mapfile -t COMPREPLY < <(compgen -W "$kind" -- "$cur") ;;',
        "        esac",
        "        return 0",
        "    fi",
        "    if [[ $cur == -* ]]; then",
        '        mapfile -t COMPREPLY < <(compgen -W "${_phase_options[$path]-}" -- "$cur")',
        "    elif [[ -n ${_phase_subcommands[$path]-} ]]; then",
        '        mapfile -t COMPREPLY < <(compgen -W "${_phase_subcommands[$path]}" -- "$cur")',
        "    else",
        '        mapfile -t COMPREPLY < <(compgen -f -- "$cur")',
        "    fi",
        "}",
        f"complete -F _phase_complete {' '.join(programs)}",
    ]
    return "\n".join(lines) + "\n"


def outputs() -> dict[str, str]:
    """Relative path -> content of every generated file."""
    commands = list(parsers())
    files = {
        f"man/{page_name(path)}.{section(path)}": man_page(path, parser)
        for path, parser in commands
    }
    files[COMPLETION] = bash_completion(commands)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default packaging/")
    parser.add_argument("--check", action="store_true", help="only say whether files are stale")
    args = parser.parse_args()
    files = outputs()
    stale = []
    for relative, content in files.items():
        target = args.out / relative
        current = target.read_text() if target.exists() else None
        if current == content:
            continue
        stale.append(relative)
        if not args.check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    known = {f"man/{p.name}" for p in (args.out / "man").glob("*.[18]")}
    extra = sorted(known - set(files))
    for relative in extra:
        stale.append(relative)
        if not args.check:
            (args.out / relative).unlink()
    if args.check and stale:
        print(f"stale (run make man): {', '.join(sorted(stale))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
