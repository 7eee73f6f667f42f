#!/usr/bin/env python3
"""Static checks of deploy/Dockerfile with Docker's own parser (PyPI `dockerfile`, which wraps
moby/buildkit's Go parser), for machines where docker cannot run.

Usage: check_dockerfile.py DOCKERFILE REPO_ROOT

Checks: it parses; the `gpu` and `cpu` targets exist; every `FROM <stage>` and `COPY --from=`
names an earlier stage; every ${VAR} in a stage is an ARG declared in that stage (or before the
first FROM, for FROM lines) or an ENV set earlier in the stage chain; local COPY sources exist in
the repository; each final target runs as a numeric non-root USER with an ENTRYPOINT.
Prints one line per failure; exits 1 if any.
"""

import os
import re
import sys

import dockerfile

FINAL_TARGETS = ("gpu", "cpu")
VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
PREDEFINED = {"PATH", "HOME", "HOSTNAME"}  # environment every image has


def CheckApt(stage, text, root, where, failures):
    """apt-get update against an https source (NVIDIA's, added by the cuda-keyring package)
    needs ca-certificates installed first: debian:12-slim has none, and apt then cannot verify
    the repository (the packages are "not found")."""
    events = []  # (position in the RUN line, what)
    for m in re.finditer(r"ca-certificates", text):
        events.append((m.start(), "certs"))
    for m in re.finditer(r"(\S*install-deps\.sh)", text):
        script = os.path.join(root, "scripts", "install-deps.sh")
        if os.path.exists(script) and "ca-certificates" in open(script).read():
            events.append((m.start(), "certs"))
    for m in re.finditer(r"dpkg -i \S*cuda-keyring", text):
        events.append((m.start(), "https_apt"))
    for m in re.finditer(r"apt-get update", text):
        events.append((m.start(), "update"))
    for _, what in sorted(events):
        if what == "update" and stage["https_apt"] and not stage["certs"]:
            failures.append(f"{where}: apt-get update with NVIDIA's https source before "
                            "ca-certificates is installed in this image")
        elif what in ("certs", "https_apt"):
            stage[what] = True


def main():
    path, root = sys.argv[1], sys.argv[2]
    failures = []
    try:
        commands = dockerfile.parse_file(path)
    except dockerfile.GoParseError as e:
        print(f"  FAIL Dockerfile does not parse: {e}")
        return 1

    global_args = set()
    stages = {}  # name -> {"args", "env", "user", "entrypoint", "parent"}
    current = None
    for c in commands:
        if c.cmd == "ARG" and current is None:
            global_args.add(c.value[0].split("=")[0])
            continue
        if c.cmd == "FROM":
            image = c.value[0]
            name = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else None
            for var in VAR.findall(image):
                if var not in global_args:
                    failures.append(f"FROM {image}: ${var} is not a global ARG")
            parent = stages.get(image)
            current = {
                "name": name, "args": set(), "parent": parent,
                "env": set(parent["env"]) if parent else set(),
                "user": parent["user"] if parent else None,
                "entrypoint": parent["entrypoint"] if parent else None,
                # CA certificates installed; an https apt source (NVIDIA's keyring) added.
                "certs": parent["certs"] if parent else False,
                "https_apt": parent["https_apt"] if parent else False,
            }
            if name:
                if name in stages:
                    failures.append(f"stage {name} defined twice")
                stages[name] = current
            continue
        if current is None:
            failures.append(f"{c.cmd} before the first FROM")
            continue
        where = f"stage {current['name']}: {c.cmd} (line {c.start_line})"
        if c.cmd == "ARG":
            current["args"].add(c.value[0].split("=")[0])
            continue
        # Variables must be known here. RUN lines are shell: only check ${...} braces there,
        # which is how this Dockerfile spells build-time variables.
        text = " ".join(c.value)
        names = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text) if c.cmd == "RUN" else \
            VAR.findall(text)
        known = current["args"] | current["env"] | PREDEFINED
        for var in names:
            if var not in known and c.cmd != "RUN":
                failures.append(f"{where}: ${var} is neither an ARG of this stage nor an ENV")
            if c.cmd == "RUN" and var in global_args and var not in current["args"]:
                failures.append(f"{where}: ${{{var}}} is a global ARG not redeclared in the stage")
        if c.cmd == "RUN":
            CheckApt(current, text, root, where, failures)
        if c.cmd == "ENV":
            current["env"].update(c.value[0::2])
        elif c.cmd == "USER":
            user = c.value[0]
            for var in VAR.findall(user):
                if var not in current["args"]:
                    failures.append(f"{where}: ${var} not declared in the stage")
            current["user"] = user
        elif c.cmd == "ENTRYPOINT":
            current["entrypoint"] = c.value
        elif c.cmd in ("COPY", "ADD"):
            source_stage = None
            for flag in c.flags:
                if flag.startswith("--from="):
                    source_stage = flag.split("=", 1)[1]
            if source_stage is not None:
                if source_stage not in stages or stages[source_stage] is current:
                    failures.append(f"{where}: --from={source_stage} is not an earlier stage")
            else:
                for src in c.value[:-1]:
                    if not os.path.exists(os.path.join(root, src)):
                        failures.append(f"{where}: source {src} is not in the repository")

    for target in FINAL_TARGETS:
        stage = stages.get(target)
        if stage is None:
            failures.append(f"no `{target}` target")
            continue
        user = stage["user"] or "0"
        uid = user.split(":")[0]
        if "$" in uid:  # ${LLMINT8_UID}: resolve from the global ARG default
            m = re.search(r"ARG\s+LLMINT8_UID=(\d+)", open(path).read())
            uid = m.group(1) if m else uid
        if not uid.isdigit() or int(uid) == 0:
            failures.append(f"target {target}: USER must be a numeric non-root uid, got {user}")
        if not stage["entrypoint"]:
            failures.append(f"target {target}: no ENTRYPOINT")

    failures = list(dict.fromkeys(failures))
    for f in failures:
        print(f"  FAIL Dockerfile: {f}")
    print(f"  Dockerfile: {len(stages)} stages, targets {', '.join(FINAL_TARGETS)}: "
          f"{'ok' if not failures else f'{len(failures)} problems'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
