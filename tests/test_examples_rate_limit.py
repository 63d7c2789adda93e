"""examples/rate_limit.py runs as a newcomer runs it, and its starts keep to its limits."""

from __future__ import annotations

import re

from test_examples_queueing import FENCE, ROOT, excerpt_source, number, run_example


def rates(output: str) -> dict[str, tuple[int, float]]:
    """Per line `NAME: N starts at ... s: R/s`: name -> (N, R)."""
    return {
        name: (int(count), float(rate))
        for name, count, rate in re.findall(
            r"^(\S+): (\d+) starts at [\d. ]+ s: ([\d.]+)/s$", output, re.MULTILINE
        )
    }


def test_rate_limit_keeps_each_host_and_the_report_queue_to_its_limit() -> None:
    out = run_example("rate_limit.py")
    assert number(out, "Fetched") == 20
    assert number(out, "Reports") == 4
    found = rates(out)
    assert set(found) == {"api.example.org", "images.example.net", "report"}
    for host in ("api.example.org", "images.example.net"):
        count, rate = found[host]
        assert count == 10
        assert rate <= 5.0 * 1.02  # 5/s per host (each host has its own budget)
    count, rate = found["report"]
    assert count == 4
    assert rate <= 2.0 * 1.02


def test_the_rate_limits_page_quotes_the_example_verbatim() -> None:
    page = (ROOT / "docs/concepts/rate-limits.md").read_text()
    quoted = [
        (excerpt_source(info), code)
        for info, code in FENCE.findall(page)
        if excerpt_source(info) is not None
    ]
    assert quoted
    for source, code in quoted:
        assert source == "examples/rate_limit.py"
        assert code in (ROOT / source).read_text()
