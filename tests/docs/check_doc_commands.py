#!/usr/bin/env python3
"""Every `llmint8 <subcommand> --flag ...` written in the docs and scripts names flags that
subcommand has, as its --help lists them: commands in prose and runbooks drift from the binary
otherwise (the GPU runbook, scripts/gpu-check.sh, runs only where no CI looks).

Usage: check_doc_commands.py --binary build/tools/llmint8 --root .
Prints each unknown flag as FILE:LINE; exits 1 if there is any.
"""
import argparse
import pathlib
import re
import subprocess
import sys

SUBCOMMANDS = ("serve", "coordinator", "worker", "generate", "loadtest", "plan", "quantize",
               "eval")
# `llmint8 <sub>` (also build/tools/llmint8, "$bin/llmint8", $bin) then its words up to the end
# of the command: a closing backtick, a pipe, ;, &&, a redirection or the line's end.
COMMAND = re.compile(r'(?:llmint8"?|\$bin"?)\s+(' + "|".join(SUBCOMMANDS) + r')\b([^`|;&<>\n]*)')
FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")


def known_flags(binary, sub):
    out = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"^  --(\w+) \(default", out.stdout, re.M))


def logical_lines(text):
    """(first line number, line) with backslash continuations joined."""
    number, pending, start = 0, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


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
                   set(root.glob("scripts/*.sh")) | set(root.glob("deploy/*.md")))
    bad, commands = [], 0
    for path in files:
        for number, line in logical_lines(path.read_text(errors="replace")):
            for m in COMMAND.finditer(line):
                commands += 1
                sub = m.group(1)
                for flag in FLAG.findall(m.group(2)):
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
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
