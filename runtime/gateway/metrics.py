"""Prometheus metrics with the OpenFaaS gateway's names.

* ``gateway_function_invocation_total{function_name, code}``: counter
* ``gateway_functions_seconds{function_name, code}``: histogram of call durations
* ``gateway_service_count{function_name}``: replicas per function (gauge)

``function_name`` is ``<name>.<namespace>`` as the OpenFaaS gateway reports it. The
hot path calls :meth:`GatewayMetrics.observe` once per call: a dict lookup and a few
additions, no locks (everything runs on the event loop thread).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

# Prometheus client defaults, as the OpenFaaS gateway uses.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class _Series:
    __slots__ = ("count", "total", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)


class GatewayMetrics:
    """Invocation counters and duration histograms per function and status code."""

    def __init__(self, namespace: str = "openfaas-fn") -> None:
        self.namespace = namespace
        # function -> status code -> series: a function's totals without scanning others'.
        self._series: dict[str, dict[int, _Series]] = {}

    def observe(self, function: str, code: int, seconds: float) -> None:
        """Count one finished invocation of ``function`` answered with ``code``."""
        codes = self._series.get(function)
        if codes is None:
            codes = self._series[function] = {}
        series = codes.get(code)
        if series is None:
            series = codes[code] = _Series()
        series.count += 1
        series.total += seconds
        series.buckets[bisect_left(BUCKETS, seconds)] += 1

    def invocations(self, function: str) -> int:
        """All invocations of ``function`` so far, whatever their status."""
        return sum(s.count for s in self._series.get(function, {}).values())

    def forget(self, function: str) -> None:
        """Drop a removed function's series."""
        self._series.pop(function, None)

    def render(self, replica_counts: Iterable[tuple[str, int]]) -> str:
        """The Prometheus text exposition of every series."""
        lines = [
            "# HELP gateway_function_invocation_total Function metrics",
            "# TYPE gateway_function_invocation_total counter",
        ]
        label: Callable[[str], str] = lambda fn: f"{fn}.{self.namespace}"  # noqa: E731
        items = sorted(
            ((fn, code), series)
            for fn, codes in self._series.items()
            for code, series in codes.items()
        )
        for (fn, code), series in items:
            lines.append(
                f'gateway_function_invocation_total{{code="{code}",function_name="{label(fn)}"}} '
                f"{series.count}"
            )
        lines += [
            "# HELP gateway_functions_seconds Function time taken",
            "# TYPE gateway_functions_seconds histogram",
        ]
        for (fn, code), series in items:
            labels = f'code="{code}",function_name="{label(fn)}"'
            cumulative = 0
            for bound, count in zip(BUCKETS, series.buckets, strict=False):
                cumulative += count
                lines.append(
                    f'gateway_functions_seconds_bucket{{{labels},le="{bound}"}} {cumulative}'
                )
            lines.append(f'gateway_functions_seconds_bucket{{{labels},le="+Inf"}} {series.count}')
            lines.append(f"gateway_functions_seconds_sum{{{labels}}} {series.total}")
            lines.append(f"gateway_functions_seconds_count{{{labels}}} {series.count}")
        lines += [
            "# HELP gateway_service_count Current count of replicas for function",
            "# TYPE gateway_service_count gauge",
        ]
        for fn, replicas in sorted(replica_counts):
            lines.append(f'gateway_service_count{{function_name="{label(fn)}"}} {replicas}')
        return "\n".join(lines) + "\n"
