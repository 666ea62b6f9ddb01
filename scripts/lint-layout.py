#!/usr/bin/env python3
"""Checks the shape ARCHITECTURE.md promises: no module of a crate imports another that
imports it back, and no Rust file of a crate (its src/ and its tests/, helpers and
subdirectories included) is over 600 lines. Prints what is wrong; exits 1 if anything
is."""
import os
import re
import sys

LIMIT = 600


def modules(root):
    """Module name -> the crate modules its code (tests excluded) refers to."""
    mods = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            src = open(path).read().split("#[cfg(test)]")[0]
            deps = set(m.group(1) for m in re.finditer(r"crate::([a-z_]+(?:::[a-z_]+)*)", src))
            for m in re.finditer(r"\bsuper::([a-z_]+)", src):
                deps.add("::".join(parts[:-1] + [m.group(1)]))
            mods["::".join(parts)] = deps
    return mods


def cycles(mods):
    known = set(mods)

    def norm(d):
        p = d.split("::")
        for i in range(len(p), 0, -1):
            c = "::".join(p[:i])
            if c in known:
                return c
        return None

    graph = {m: {n for n in map(norm, ds) if n and n != m} for m, ds in mods.items()}
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def main():
    bad = False
    for crate in sorted(os.listdir("crates")):
        src = os.path.join("crates", crate, "src")
        if not os.path.isdir(src):
            continue
        for c in cycles(modules(src)):
            print(f"{crate}: modules import each other: {', '.join(c)}")
            bad = True
        for part in ("src", "tests"):
            for path in rust_files(os.path.join("crates", crate, part)):
                n = sum(1 for _ in open(path))
                if n > LIMIT:
                    print(f"{path}: {n} lines (over {LIMIT}): split it by concern")
                    bad = True
    if bad:
        sys.exit(1)
    print(f"layout: no module cycles, no Rust file in src or tests over {LIMIT} lines")


def rust_files(root):
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(dirpath, f)


if __name__ == "__main__":
    main()
