#!/usr/bin/env python3
"""Every `llmint8 <subcommand> --flag ...` written in the docs' code (fenced blocks and inline
`code`, which may wrap across lines) and in the scripts names flags that subcommand has, as its
--help lists them: commands in docs and runbooks drift from the binary otherwise (the GPU
runbook, scripts/gpu-check.sh, runs only where no CI looks). <placeholders>, a|b alternatives
and quoted values are values, not the end of a command.

Usage: check_doc_commands.py --binary build/tools/llmint8 --root .
Prints each unknown flag as FILE:LINE; exits 1 if there is any.
"""
import argparse
import pathlib
import re
import subprocess
import sys

SUBCOMMANDS = ("serve", "coordinator", "worker", "generate", "loadtest", "plan", "quantize",
               "eval", "status")
# `llmint8 <sub>` (also build/tools/llmint8, "$bin/llmint8", $bin, $B, $LLMINT8) and the words
# after.
COMMAND = re.compile(r'(?:llmint8"?|\$\{?(?:bin|B)\}?"?|\$\{?LLMINT8\}?"?)\s+(' +
                     "|".join(SUBCOMMANDS) + r")\b(.*)")
FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")


def known_flags(binary, sub):
    out = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"^  --(\w+) \(default", out.stdout, re.M))


def shell_lines(lines, first=1):
    """(line number, text) with backslash continuations joined."""
    pending, start = "", first
    for number, line in enumerate(lines, first):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def markdown_candidates(text):
    """Code: fenced blocks line by line (continuations joined), and inline `code` spans, which
    may wrap across the lines of a paragraph or list item. Prose outside them is not read."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            yield from shell_lines(lines[i + 1:j], i + 2)
            i = j + 1
            continue
        # A paragraph: up to a blank line, a fence or the next list item.
        j = i + 1
        while (j < len(lines) and lines[j].strip() and not lines[j].lstrip().startswith("```")
               and not re.match(r"\s*([-*]|\d+\.)\s", lines[j])):
            j += 1
        paragraph = " ".join(l.strip() for l in lines[i:j])
        for span in re.findall(r"`([^`]+)`", paragraph):
            yield i + 1, span
        i = j


def command_flags(text):
    """(subcommand, [flags]) of each llmint8 command in a piece of code."""
    text = re.sub(r"<[^<>]*>", "X", text)  # <placeholders>
    for m in COMMAND.finditer(text):
        rest = re.sub(r"\"[^\"]*\"|'[^']*'", '""', m.group(2))  # quoted values
        rest = re.split(r"\s\|\s|\|\||&&|;|>|`|\)", rest)[0]  # to a pipe, list, redirect
        yield m.group(1), FLAG.findall(rest)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    root = pathlib.Path(args.root)
    flags = {sub: known_flags(args.binary, sub) for sub in SUBCOMMANDS}
    for sub, names in flags.items():
        if not names:
            print(f"could not read the flags of `llmint8 {sub} --help`")
            return 1
    files = sorted(set(root.glob("*.md")) | set(root.glob("docs/*.md")) |
                   set(root.glob("*/README.md")) | set(root.glob("*/*/README.md")) |
                   set(root.glob("deploy/*.md")) | set(root.glob("scripts/*.sh")) |
                   set(root.glob("train/**/*.sh")) | set(root.glob("deploy/*.sh")))
    bad, commands = [], 0
    for path in files:
        text = path.read_text(errors="replace")
        pieces = (markdown_candidates(text) if path.suffix == ".md"
                  else shell_lines(text.splitlines()))
        for number, piece in pieces:
            for sub, found in command_flags(piece):
                commands += 1
                for flag in found:
                    name = flag.replace("-", "_")
                    if name in ("help", "helpfull") or name in flags[sub]:
                        continue
                    if name.startswith("no") and name[2:] in flags[sub]:
                        continue
                    bad.append(f"{path.relative_to(root)}:{number}: `llmint8 {sub}` has no "
                               f"--{flag}")
    for b in bad:
        print(b)
    print(f"check_doc_commands: {commands} commands in {len(files)} files, "
          f"{len(bad)} unknown flags")
    if commands < 50:  # the patterns stopped matching: nothing would be checked
        print(f"check_doc_commands: only {commands} commands found; expected 50 or more")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
