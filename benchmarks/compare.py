"""Compare two runs of the engine scenario, each against Django's engines of its own run:
``python -m benchmarks.compare BEFORE.json AFTER.json``.

Each file is what ``python -m benchmarks engines --json FILE`` wrote, for instance in a
checkout of an earlier commit and in this one. Absolute times from two runs differ with
whatever else the machine was doing; a ratio to a reference engine timed in the same
interleaved rounds moves much less. So each cell is django-memopt's median divided by its
reference's median (LMDB against ``cache`` on local memory, Redis against ``cache`` on
django-redis) in each run, and the change of that ratio. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from benchmarks.harness.workload import COLD, OPERATIONS, SIZES

# Each django-memopt engine -> the Django engine it is held against.
REFERENCES = {"memopt-lmdb": "cache (locmem)", "memopt-redis": "cache (django-redis)"}
_PREFIX = "engines: "


def medians(path: str) -> dict[str, float]:
    """Cell name ("read-only small memopt-lmdb") -> its median in µs, from a pyperf suite."""
    with open(path, encoding="utf-8") as file:
        suite = json.load(file)
    found = {}
    for benchmark in suite["benchmarks"]:
        name = benchmark["metadata"]["name"]
        if name.startswith(_PREFIX):
            values = [value for run in benchmark["runs"] for value in run.get("values", [])]
            found[name[len(_PREFIX) :]] = statistics.median(values) * 1e6
    return found


def table(before: dict[str, float], after: dict[str, float]) -> list[str]:
    head = ["workload", "size"]
    for engine, reference in REFERENCES.items():
        head += [f"`{engine}` µs", f"÷ `{reference}`", "change"]
    lines = ["| " + " | ".join(head) + " |", "|:---|:---|" + "---:|" * (len(head) - 2)]
    for operation in (*OPERATIONS, COLD):
        for size in SIZES:
            row = [operation, size]
            for engine, reference in REFERENCES.items():
                cells = [f"{operation} {size} {name}" for name in (engine, reference)]
                if not all(cell in run for run in (before, after) for cell in cells):
                    row += ["", "", ""]
                    continue
                mine, theirs = cells
                then, now = before[mine] / before[theirs], after[mine] / after[theirs]
                row += [
                    f"{before[mine]:,.1f} → {after[mine]:,.1f}",
                    f"{then:.2f} → {now:.2f}",
                    f"{(now / then - 1) * 100:+.0f}%",
                ]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("before", help="the earlier run's --json file")
    parser.add_argument("after", help="the later run's --json file")
    args = parser.parse_args(argv)
    print("\n".join(table(medians(args.before), medians(args.after))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
