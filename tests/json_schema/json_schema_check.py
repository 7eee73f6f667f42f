#!/usr/bin/env python3
"""guided_json is never wider than its schema: checked against the jsonschema package.

For each schema in schemas/, random whole outputs that coordinator/json_schema.h allows (the
sampler's random walks) must be JSON texts valid under the schema (jsonschema's Draft 2020-12
validator, formats uuid, ipv4, ipv6 and email checked; date, time, uri and duration forms are
checked by json_schema_test).
Then near misses of them (a byte deleted, doubled or replaced, two swapped): every one the
constraint takes must be valid too. Those it refuses though valid are counted, not failed: the
output is narrower than the schema on purpose (json_schema.h says where).

  json_schema_check.py SAMPLER [--count N] [--seed S]
"""
import argparse
import json
import pathlib
import random
import subprocess
import sys

try:
    import jsonschema
except ImportError:
    print("SKIP: python3-jsonschema is not installed (scripts/install-deps.sh installs it)")
    sys.exit(77)

SCHEMAS = pathlib.Path(__file__).parent / "schemas"
MUTATION_BYTES = '"{}[],:.-+0123456789eEtfnul \\\n\t/'


def run(sampler, *args, stdin=None):
    done = subprocess.run([sampler, *args], input=stdin, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        sys.exit(f"{' '.join([sampler, *args])} failed ({done.returncode}): {done.stderr}")
    # Lines end in '\n' only: str.splitlines would split at U+2028 and the like, which
    # strings may hold unescaped.
    return done.stdout.split("\n")[:-1]


def parse_strict(text):
    def no_constant(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=no_constant)


def valid(validator, text):
    try:
        value = parse_strict(text)
    except ValueError:
        return False
    return validator.is_valid(value)


def mutations(text, rng, count):
    out = []
    for _ in range(count):
        i = rng.randrange(len(text))
        kind = rng.randrange(4)
        if kind == 0:
            out.append(text[:i] + text[i + 1:])
        elif kind == 1:
            out.append(text[:i] + text[i] + text[i:])
        elif kind == 2:
            out.append(text[:i] + rng.choice(MUTATION_BYTES) + text[i + 1:])
        elif i + 1 < len(text):
            out.append(text[:i] + text[i + 1] + text[i] + text[i + 2:])
    return [m for m in out if m]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sampler")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    checker = jsonschema.FormatChecker(formats=["uuid", "ipv4", "ipv6", "email"])
    failures = 0
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
        samples = [json.loads(line) for line in
                   run(args.sampler, "sample", str(path), str(args.count), str(args.seed))]
        bad = [s for s in samples if not valid(validator, s)]
        for s in bad[:5]:
            print(f"{path.name}: a sample the schema refuses: {s!r}")
        near = [m for s in samples for m in mutations(s, rng, 10)]
        taken = run(args.sampler, "check", str(path),
                    stdin="".join(json.dumps(m) + "\n" for m in near))
        if len(taken) != len(near):
            sys.exit(f"{path.name}: {len(taken)} answers to {len(near)} candidates")
        wider = [m for m, t in zip(near, taken) if t == "1" and not valid(validator, m)]
        for m in wider[:5]:
            print(f"{path.name}: a near miss taken that the schema refuses: {m!r}")
        narrower = sum(1 for m, t in zip(near, taken) if t == "0" and valid(validator, m))
        distinct = len(set(samples))
        print(f"{path.name}: {len(samples)} samples ({distinct} distinct) valid: "
              f"{len(samples) - len(bad)}; near misses {len(near)}, taken "
              f"{taken.count('1')}, of them invalid {len(wider)}; valid but refused {narrower}")
        failures += len(bad) + len(wider)
        if distinct < min(len(samples), 5):
            print(f"{path.name}: the walks found {distinct} distinct outputs: too few to test")
            failures += 1
    if failures:
        sys.exit(f"{failures} outputs wider than their schema")


if __name__ == "__main__":
    main()
