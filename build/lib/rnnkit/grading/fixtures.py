"""Stored expected values of every grading spec: writing and checking them (reading: :func:`specs.stored_export`).

Each spec's reference export lives in ``solutions/fixtures/<name>.npz`` (``$RNNKIT_FIXTURES`` overrides the folder),
with the instructor's sources: not in the installed package, which every student kernel can read, and not in the
sandbox, which binds only the package. The judge compares a student's result with both these files and the values it
recomputes live from ``rnnkit``, so a change to ``rnnkit`` that shifts an expected value shows up as a stale fixture
in CI instead of silently moving the grades.

Commands (``make fixtures`` runs the first; CI runs the second)::

    python -m rnnkit.grading.fixtures --write    # regenerate every fixture from rnnkit
    python -m rnnkit.grading.fixtures --check    # exit 1 if a fixture is missing, extra or out of date
    python -m rnnkit.grading.fixtures --list     # every check: its cases and what it covers
"""
from __future__ import annotations

import argparse
import sys

from . import export, specs
from .judge import compare_exports

FIXTURE_DIR = specs.FIXTURE_DIR
path = specs.fixture_path


def write() -> list[str]:
    """Regenerate every fixture from the live references; returns the names written."""
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in FIXTURE_DIR.glob("*.npz"):
        if stale.stem not in specs.REGISTRY:
            stale.unlink()
    for name in specs.names():
        export.save(specs.expected_export(name), path(name))
    specs.stored_export.cache_clear()
    return specs.names()


def check() -> list[str]:
    """Problems with the stored fixtures (empty when all are current)."""
    problems = []
    for name in specs.names():
        stored = specs.stored_export(name)
        if stored is None:
            problems.append(f"{name}: missing {path(name)}")
            continue
        live = specs.expected_export(name)
        if set(stored) != set(live):
            problems.append(f"{name}: stored entries differ from the live reference's")
            continue
        for i, message in compare_exports(specs.get(name), stored, live):
            problems.append(f"{name}: case {i}: stored fixture disagrees with rnnkit: {message}")
    # *_reference.npz: trained models the judges of 06 and 08 rebuild (instructors' files, not a check's export)
    extra = sorted(p.stem for p in FIXTURE_DIR.glob("*.npz")
                   if p.stem not in specs.REGISTRY and not p.stem.endswith("_reference"))
    problems += [f"{name}: fixture without a spec" for name in extra]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnkit.grading.fixtures", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate every fixture from rnnkit")
    mode.add_argument("--check", action="store_true", help="exit 1 unless every fixture is current")
    mode.add_argument("--list", action="store_true", help="list every check with its cases and what it covers")
    args = parser.parse_args(argv)
    if args.list:
        for name in specs.names():
            spec = specs.get(name)
            cases = len(spec.make_cases()) if spec.kind == "function" else 1
            print(f"{name:28s} {cases} case{'s' * (cases != 1)}  {spec.summary}")
        return 0
    if args.write:
        names = write()
        print(f"wrote {len(names)} fixtures to {FIXTURE_DIR}")
        return 0
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(specs.names())} fixtures checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
