#!/usr/bin/env python3
"""The dependency graph of the crate's top-level modules, from the
`crate::<module>` paths in src/. Prints each module's dependencies and
exits 1 if the graph has a cycle (printed) or a layer rule is broken.

Run by the architecture test (tests/architecture.rs) and usable by hand:
    python3 scripts/module_graph.py
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Modules that may import nothing of the crate, and what `config` may use.
LEAVES = {"core", "metrics", "logging"}
CONFIG_MAY_USE = {"core"}


def modules():
    out = {}
    for entry in sorted(os.listdir(SRC)):
        path = os.path.join(SRC, entry)
        if os.path.isdir(path):
            files = [
                os.path.join(root, f)
                for root, _, fs in os.walk(path)
                for f in fs
                if f.endswith(".rs")
            ]
            out[entry] = files
        elif entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            out[entry[:-3]] = [path]
    return out


def graph():
    mods = modules()
    deps = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            with open(f, encoding="utf-8") as fh:
                text = fh.read()
            # Comments and doc links do not make a dependency.
            code = "\n".join(
                line for line in text.splitlines() if not line.lstrip().startswith("//")
            )
            for used in re.findall(r"crate::([a-z_]+)", code):
                if used != m and used in mods:
                    deps[m].add(used)
    return deps


def cycle(deps):
    state = {}
    stack = []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(deps[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(deps):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def main():
    deps = graph()
    for m in sorted(deps):
        print(f"{m:10} -> {', '.join(sorted(deps[m])) or '-'}")
    problems = []
    found = cycle(deps)
    if found:
        problems.append("cycle: " + " -> ".join(found))
    for leaf in sorted(LEAVES & deps.keys()):
        if deps[leaf]:
            problems.append(f"{leaf} must import no module of the crate: {sorted(deps[leaf])}")
    if "config" in deps and deps["config"] - CONFIG_MAY_USE:
        problems.append(f"config may use only {sorted(CONFIG_MAY_USE)}: {sorted(deps['config'])}")
    for p in problems:
        print("error:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
