"""The property-based contract test run long and random, for local use (not a test):

    uv run python services/sample/bench/contract.py [--examples 200]

Runs tests/test_sample_property.py with --examples generated requests per operation and kind (valid,
invalid) instead of the suite's 15, from a random seed instead of a fixed one (pytest prints the seed
to reproduce a failure with), against real Postgres, Redis and NATS as in the suite. Prints the
requests sent per operation, then each failure with the smallest request hypothesis found for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1] / "tests"
ROOT = Path(__file__).resolve().parents[3]


class Report:
    """A pytest plugin that keeps the failed tests' reports."""

    def __init__(self) -> None:
        self.failures: list[pytest.TestReport] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failures.append(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="requests per operation and kind (default 200)")
    args = parser.parse_args()
    os.environ["SAMPLE_CONTRACT_EXAMPLES"] = str(args.examples)
    os.chdir(ROOT)
    report = Report()
    pytest.main(
        [str(TESTS / "test_sample_property.py"), "-q", "-p", "no:cacheprovider", "--tb=no", "--no-header"],
        plugins=[report],
    )
    cases = sys.modules["test_sample_property"].CASES
    print(f"\n{'operation':<32} {'valid':>7} {'invalid':>8}")
    for operation in sorted({key.split(" ", 1)[1] for key in cases}, key=lambda o: o.split()[::-1]):
        print(f"{operation:<32} {cases['valid ' + operation]:>7} {cases['invalid ' + operation]:>8}")
    print(
        f"{'total':<32} {sum(v for k, v in cases.items() if k.startswith('valid')):>7} "
        f"{sum(v for k, v in cases.items() if k.startswith('invalid')):>8}"
    )
    print(f"\n{len(report.failures)} failures")
    for failure in report.failures:
        print(f"\n{failure.nodeid}\n{failure.longreprtext[-3000:]}")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
