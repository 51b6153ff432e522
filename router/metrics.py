"""The router's Prometheus metrics, kept as plain counters on the event loop thread.

* ``router_requests_total{route, code}``: requests by route kind (``function``,
  ``github-event``, ``dashboard``, ``git``, ``auth``, ``healthz``, ``metrics``,
  ``redirect``, ``none``) and status class (``2xx``..``5xx``);
* ``router_upstream_seconds{upstream}``: histogram of the time from forwarding a
  request to its response headers, per upstream (``gateway``, ``git``, ``auth``);
* ``router_function_list_refreshes_total{trigger, outcome}``: refreshes of the cached
  function list (``interval`` or ``miss``; ``ok`` or ``error``), with
  ``router_function_list_functions`` and ``router_function_list_age_seconds``;
* ``router_session_checks_total{result}``: protected-path decisions (``cached``,
  ``allowed``, ``login``, ``forbidden``, ``unavailable``).

Each request costs one dict update and one histogram bucket: no locks, no labels built
per request.
"""

from __future__ import annotations

from bisect import bisect_left

# Upstream latencies are mostly under a millisecond here: finer low buckets than the
# Prometheus client's defaults.
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class _Histogram:
    __slots__ = ("count", "total", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.buckets[bisect_left(BUCKETS, seconds)] += 1


class RouterMetrics:
    """Counters and histograms of one router process."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], int] = {}
        self._upstream: dict[str, _Histogram] = {}
        self._refreshes: dict[tuple[str, str], int] = {}
        self._sessions: dict[str, int] = {}

    def request(self, route: str, status: int) -> None:
        """Count one answered request."""
        key = (route, _CLASSES[status // 100] if 100 <= status < 600 else "5xx")
        self._requests[key] = self._requests.get(key, 0) + 1

    def upstream(self, upstream: str, seconds: float) -> None:
        """Record how long ``upstream`` took to send response headers."""
        histogram = self._upstream.get(upstream)
        if histogram is None:
            histogram = self._upstream[upstream] = _Histogram()
        histogram.observe(seconds)

    def refresh(self, trigger: str, ok: bool) -> None:
        key = (trigger, "ok" if ok else "error")
        self._refreshes[key] = self._refreshes.get(key, 0) + 1

    def session(self, result: str) -> None:
        self._sessions[result] = self._sessions.get(result, 0) + 1

    def requests(self, route: str, code_class: str) -> int:
        """Requests counted so far for ``route`` and ``code_class`` (e.g. ``"2xx"``)."""
        return self._requests.get((route, code_class), 0)

    def render(self, functions: int, age: float | None) -> str:
        """The Prometheus text exposition; ``functions`` and ``age`` describe the cached list."""
        lines = [
            "# HELP router_requests_total Requests answered, by route kind and status class",
            "# TYPE router_requests_total counter",
        ]
        for (route, code), count in sorted(self._requests.items()):
            lines.append(f'router_requests_total{{route="{route}",code="{code}"}} {count}')
        lines += [
            "# HELP router_upstream_seconds Time from forwarding a request to its response headers",
            "# TYPE router_upstream_seconds histogram",
        ]
        for name, hist in sorted(self._upstream.items()):
            cumulative = 0
            for bound, count in zip(BUCKETS, hist.buckets, strict=False):
                cumulative += count
                lines.append(
                    f'router_upstream_seconds_bucket{{upstream="{name}",le="{bound}"}} {cumulative}'
                )
            lines.append(
                f'router_upstream_seconds_bucket{{upstream="{name}",le="+Inf"}} {hist.count}'
            )
            lines.append(f'router_upstream_seconds_sum{{upstream="{name}"}} {hist.total}')
            lines.append(f'router_upstream_seconds_count{{upstream="{name}"}} {hist.count}')
        lines += [
            "# HELP router_function_list_refreshes_total Refreshes of the cached function list",
            "# TYPE router_function_list_refreshes_total counter",
        ]
        for (trigger, outcome), count in sorted(self._refreshes.items()):
            lines.append(
                f'router_function_list_refreshes_total{{trigger="{trigger}",outcome="{outcome}"}} '
                f"{count}"
            )
        lines += [
            "# HELP router_function_list_functions Functions in the cached list",
            "# TYPE router_function_list_functions gauge",
            f"router_function_list_functions {functions}",
            "# HELP router_function_list_age_seconds Seconds since the list was last loaded",
            "# TYPE router_function_list_age_seconds gauge",
        ]
        if age is not None:
            lines.append(f"router_function_list_age_seconds {age:.3f}")
        lines += [
            "# HELP router_session_checks_total Access decisions on protected paths",
            "# TYPE router_session_checks_total counter",
        ]
        for result, count in sorted(self._sessions.items()):
            lines.append(f'router_session_checks_total{{result="{result}"}} {count}')
        return "\n".join(lines) + "\n"
