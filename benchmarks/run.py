"""Run the benchmarks and write their pages: ``python -m benchmarks [scenario ...]``.

From the repository root, with the package installed with its ``redis`` extra and
``benchmarks/requirements.txt``::

    python -m benchmarks --quick                      # every scenario, a smoke run
    python -m benchmarks --output-dir docs            # every page of docs/, with plots
    python -m benchmarks gate filter_check --output-dir /tmp/pages

Each scenario runs in a fresh process of its own (each configures Django its own way),
one after the other; its result comes back here, and every page whose scenarios ran is
written to ``--output-dir`` (plots under ``_static/benchmarks/``). Progress goes to
stderr. The exit status is 1 if a scenario failed.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
import traceback
from typing import Any

from benchmarks import pages
from benchmarks.harness import log, report
from benchmarks.harness.servers import PLACEMENTS, ROOT
from benchmarks.scenarios import SCENARIOS


def _measure_and_send(sender: Any, name: str, quick: bool, options: dict[str, Any]) -> None:
    try:
        module = importlib.import_module(SCENARIOS[name])
        result = (True, module.measure(quick, **options))
    except BaseException:
        result = (False, traceback.format_exc())
    sender.send(result)
    sender.close()


def measure_in_child(name: str, quick: bool, options: dict[str, Any]) -> Any:
    """Scenario ``name``'s result, measured in a new (spawned) interpreter.

    Raises ``RuntimeError`` with the child's traceback if it raised or died.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_measure_and_send, args=(sender, name, quick, options))
    child.start()
    sender.close()
    try:
        ok, value = receiver.recv()
    except EOFError:
        ok, value = False, "the scenario's process ended without a result"
    child.join()
    if not ok:
        raise RuntimeError(value)
    return value


def dump_samples(results: dict[str, Any], path: str) -> None:
    """Every timing a scenario kept, as a pyperf suite (``python -m pyperf compare_to``)."""
    import pyperf

    benchmarks = [
        pyperf.Benchmark(
            [
                pyperf.Run(
                    [ns / 1e9 for ns in values],
                    collect_metadata=False,
                    metadata={"name": f"{scenario}: {cell}", "unit": "second"},
                )
            ]
        )
        for scenario, found in results.items()
        for cell, values in getattr(found, "samples", {}).items()
    ]
    if benchmarks:
        pyperf.BenchmarkSuite(benchmarks).dump(path, replace=True)
        log(f"samples written to {path}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        choices=[[], *SCENARIOS],
        metavar="scenario",
        help=f"what to run (default: all): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    parser.add_argument(
        "--output-dir",
        help="where the pages go (default: a new temporary "
        "directory); `docs` regenerates the documentation's",
    )
    parser.add_argument(
        "--pin",
        choices=PLACEMENTS,
        default="split",
        help="CPUs of Redis and the engine comparison: two different ones "
        "(default), one, or left to the scheduler",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write every timed sample, as a pyperf JSON suite"
    )
    parser.add_argument(
        "--rerender", metavar="FILE", help="measure nothing: write the pages of a saved run"
    )
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios or list(SCENARIOS)
    return args


def measure(args: argparse.Namespace, argv: list[str]) -> tuple[Any, ...]:
    """Run the scenarios: (results, failures, spans, the run), saved to a file as well."""
    run = report.Run(argv=argv, quick=args.quick)
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    spans: dict[str, report.Span] = {}
    for name in args.scenarios:
        log(f"{name}...")
        span = spans[name] = report.Span(report.load_average())
        started = time.perf_counter()
        try:
            options = {"placement": args.pin} if name == "engines" else {}
            results[name] = measure_in_child(name, args.quick, options)
        except RuntimeError as failure:
            text = str(failure).strip()
            log(f"{name} failed:\n{text}")
            failed[name] = text.splitlines()[-1]
        span.seconds, span.load_end = time.perf_counter() - started, report.load_average()
        log(f"{name}: {span.seconds:.0f} s")
    run.changed = report.package_digest() != run.digest
    measured = (results, failed, spans, run)
    if not args.quick:  # a long run's figures outlive a page that fails to render
        with tempfile.NamedTemporaryFile("wb", prefix="memopt-bench-", delete=False) as saved:
            pickle.dump(measured, saved)
        log(f"results saved to {saved.name} (--rerender it to write the pages again)")
    return measured


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.rerender:
        with open(args.rerender, "rb") as saved:
            results, failed, spans, run = pickle.load(saved)
    else:
        results, failed, spans, run = measure(args, argv)
    directory = args.output_dir or tempfile.mkdtemp(prefix="memopt-bench-pages-")
    if run.quick and os.path.realpath(directory) == os.path.join(ROOT, "docs"):
        sys.exit("a --quick run is a smoke test: its pages do not belong in docs/")
    os.makedirs(directory, exist_ok=True)
    for spec in pages.PAGES:
        if spec.ready(results, set(spans)):
            log(f"wrote {pages.write(spec, results, failed, spans, run, directory)}")
    if args.json:
        dump_samples(results, args.json)
    return 1 if failed else 0
