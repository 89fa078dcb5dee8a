#!/usr/bin/env python3
"""
The daemon's layers, checked: `make lint` runs this after building the
daemon's objects. It builds two graphs of daemon/'s modules and fails when
either has a cycle through a backend (backend.c's job contract, the SQLite
backend, the PostgreSQL backend) or the dot-commands (commands.c):

- includes: module A -> B when a file of A includes a header of B;
- calls: module A -> B when an object of A references a symbol an object of
  B defines (`nm`, so a call through a function pointer, such as a job's
  on_done or the bind host's deliver(), is no edge: that is the point).

A module is a file's stem, except the backends, the session and the
federation, which are split in files sharing a private header:
backend_pg.c, pg_*.c and backend_pg.h are "backend_pg";
backend_sqlite.c, sqlite_*.c and backend_sqlite.h are "backend_sqlite",
and so are xact.c, xact_*.c and xact_int.h (the commit path of its
workers' transactions across binds; xact_log.c, the coordinator log, is
a module of its own); session*.c, session.h and session_int.h are
"session"; federate*.c, federate.h and federate_int.h are "federate";
pgvtab*.c/h are "pgvtab" and sqlparse*.c/h "sqlparse".
The server and the session may sit in one cycle together (the server
owns its sessions; a session reads its struct server and tells it when
it is gone): nothing else may, among the modules below.

The layers it keeps, top to bottom: main (which hands commands_dispatch to
server_init) > commands > server > session > backend_pg, backend_sqlite >
backend (jobs, the bind host and its event queue).

Usage: layers.py [--objects DIR] [-v]; DIR holds the daemon's .o files
(default build/daemon). Exit 0 when clean, 1 with the cycles printed.
Python 3 standard library and binutils' nm only.
"""

import argparse
import collections
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAEMON = os.path.join(REPO, "daemon")

# Modules that must sit in no cycle, and the one pair that may.
GUARDED = {"backend", "backend_pg", "backend_sqlite", "commands"}
CHECKED = GUARDED | {"server", "session"}
ALLOWED = {"server", "session"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"daemon/([A-Za-z0-9_]+)\.h"', re.M)


def module_of(name):
    """The module a daemon/ file stem belongs to."""
    if name == "backend_pg" or name.startswith("pg_"):
        return "backend_pg"
    if name == "backend_sqlite" or name.startswith("sqlite_") or name == "xact" or (
            name.startswith("xact_") and name != "xact_log"):
        return "backend_sqlite"  # xact*.c: the commit path of its workers' transactions across binds
    if name == "federate" or name.startswith("federate_"):
        return "federate"
    if name == "session" or name.startswith("session_"):
        return "session"
    if name.startswith("pgvtab") or name.startswith("sqlparse"):
        return name.split("_")[0]  # pgvtab*.c/h, sqlparse*.c/h: one module each
    return name


def include_graph():
    edges = collections.defaultdict(dict)
    for fn in sorted(os.listdir(DAEMON)):
        stem, ext = os.path.splitext(fn)
        if ext not in (".c", ".h"):
            continue
        with open(os.path.join(DAEMON, fn), encoding="utf-8") as f:
            text = f.read()
        src = module_of(stem)
        for header in INCLUDE.findall(text):
            dst = module_of(header)
            if dst != src:
                edges[src].setdefault(dst, []).append("%s includes daemon/%s.h" % (fn, header))
    return edges


def nm(path):
    out = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBRCV":
            defined.add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            undefined.add(parts[1])
    return defined, undefined


def call_graph(objdir):
    owner, uses = {}, {}
    for fn in sorted(os.listdir(objdir)):
        stem, ext = os.path.splitext(fn)
        if ext != ".o" or not os.path.exists(os.path.join(DAEMON, stem + ".c")):
            continue
        defined, undefined = nm(os.path.join(objdir, fn))
        for sym in defined:
            owner[sym] = stem
        uses[stem] = undefined
    if not uses:
        sys.exit("layers.py: no daemon objects in %s (build them first)" % objdir)
    edges = collections.defaultdict(dict)
    for stem, undefined in uses.items():
        src = module_of(stem)
        for sym in sorted(undefined):
            if sym in owner and module_of(owner[sym]) != src:
                edges[src].setdefault(module_of(owner[sym]), []).append(
                    "%s.o uses %s (%s.o)" % (stem, sym, owner[sym]))
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    nodes = set(edges) | {d for e in edges.values() for d in e}

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def check(kind, edges, verbose):
    bad = 0
    for comp in cycles(edges):
        named = comp & CHECKED
        if not (named & GUARDED) and named <= ALLOWED:
            if verbose:
                print("%s: allowed cycle: %s" % (kind, " ".join(sorted(comp))))
            continue
        bad += 1
        print("%s: cycle through %s:" % (kind, " ".join(sorted(comp))))
        for src in sorted(comp):
            for dst in sorted(edges.get(src, {})):
                if dst in comp:
                    why = edges[src][dst]
                    print("  %s -> %s: %s%s" % (src, dst, "; ".join(why[:3]),
                                                " (+%d more)" % (len(why) - 3) if len(why) > 3 else ""))
    if verbose:
        for src in sorted(edges):
            if src in CHECKED:
                print("%s: %s -> %s" % (kind, src, " ".join(sorted(d for d in edges[src] if d in CHECKED))))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", default=os.path.join(REPO, "build", "daemon"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    bad = check("includes", include_graph(), args.verbose)
    bad += check("calls", call_graph(args.objects), args.verbose)
    if bad:
        print("layers: %d cycle%s through a backend or the commands (see tests/tools/layers.py)"
              % (bad, "" if bad == 1 else "s"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
