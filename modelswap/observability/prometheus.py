"""``GET /metrics``: Prometheus exposition of the host, the router and the upstreams.

One :class:`PrometheusMetrics` per app, with its own ``CollectorRegistry``
(never the process-global one: several apps live in one test process). Three
kinds of families, in this order:

1. llama-swap's ``llamaswap_*`` gauges (server spec §21), read at scrape time
   from the performance monitor's latest host sample and latest sample per
   GPU (omitted when the monitor is off or has no sample yet);
2. modelswap's own ``modelswap_*`` families: request histograms and counters
   fed by :meth:`PrometheusMetrics.observe` (one call per finished request,
   from the recorder's background batch), swap facts fed by
   :meth:`PrometheusMetrics.on_fact`, replays counted by
   :meth:`PrometheusMetrics.on_replay`, and swaps, crashes, in-flight, queue
   length and model state read at scrape time from ``router.statistics()``;
3. each ready upstream's own metrics, with a ``model`` label
   (:mod:`~modelswap.observability.upstream_metrics`).

``observe`` runs for every request (in the recorder's batches — on the loop, or
in its writer thread with a file store — while
``on_fact`` runs on the event loop and scrapes read on the event loop), so it
is a few dictionary lookups and ``inc``/``observe`` calls on cached label
children. prometheus_client's children are thread-safe; the caches are only
ever added to, and two threads racing to add one model both get the same
child. Model label values are capped at :data:`MAX_MODEL_LABELS` distinct
names (later ones count as ``_other``) so a flood of odd names cannot grow the
exposition without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelswap.observability.gpu import MB, GpuSample
from modelswap.observability.performance import PerformanceMonitor, SysSample
from modelswap.observability.records import RequestRecord
from modelswap.observability.upstream_metrics import UpstreamScraper
from modelswap.process import ProcessState
from modelswap.router.facts import RouterFact, SwapFinished, SwapStarted
from modelswap.router.runtime import RouterStatistics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_MODEL_LABELS = 1000
OTHER_MODEL = "_other"

QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

_GPU_GAUGES: tuple[tuple[str, str, Callable[[GpuSample], float]], ...] = (
    ("llamaswap_gpu_temperature_celsius", "GPU temperature in Celsius", lambda g: g.temp_c),
    (
        "llamaswap_gpu_vram_temperature_celsius",
        "GPU VRAM temperature in Celsius",
        lambda g: g.vram_temp_c,
    ),
    ("llamaswap_gpu_util_percent", "GPU utilization percent (0-100)", lambda g: g.gpu_util_pct),
    (
        "llamaswap_gpu_memory_util_percent",
        "GPU memory utilization percent (0-100)",
        lambda g: g.mem_util_pct,
    ),
    ("llamaswap_gpu_memory_used_bytes", "GPU memory used in bytes", lambda g: g.mem_used_mb * MB),
    (
        "llamaswap_gpu_memory_total_bytes",
        "GPU memory total in bytes",
        lambda g: g.mem_total_mb * MB,
    ),
    ("llamaswap_gpu_fan_speed_percent", "GPU fan speed percent (0-100)", lambda g: g.fan_speed_pct),
    ("llamaswap_gpu_power_draw_watts", "GPU power draw in watts", lambda g: g.power_draw_w),
)


def system_families(sys: SysSample | None, gpus: Sequence[GpuSample]) -> list[Metric]:
    """llama-swap's gauges from the latest host sample and the latest sample per GPU."""
    families: list[Metric] = []
    if sys is not None:
        cpu = GaugeMetricFamily(
            "llamaswap_cpu_util_percent", "CPU utilization per core (0-100)", labels=["core"]
        )
        for core, pct in enumerate(sys.cpu_util_per_core):
            cpu.add_metric([str(core)], pct)
        families.append(cpu)
        for name, doc, mb in (
            ("llamaswap_memory_total_bytes", "Total memory in bytes", sys.mem_total_mb),
            ("llamaswap_memory_used_bytes", "Used memory in bytes", sys.mem_used_mb),
            ("llamaswap_memory_free_bytes", "Free memory in bytes", sys.mem_free_mb),
            ("llamaswap_swap_total_bytes", "Total swap in bytes", sys.swap_total_mb),
            ("llamaswap_swap_used_bytes", "Used swap in bytes", sys.swap_used_mb),
        ):
            families.append(GaugeMetricFamily(name, doc, value=mb * MB))
        load = GaugeMetricFamily("llamaswap_load_average", "Load average", labels=["interval"])
        load.add_metric(["1m"], sys.load_avg_1)
        load.add_metric(["5m"], sys.load_avg_5)
        load.add_metric(["15m"], sys.load_avg_15)
        families.append(load)
        if sys.net_io:
            net = CounterMetricFamily(
                "llamaswap_network_bytes",
                "Total network bytes transferred",
                labels=["interface", "direction"],
            )
            for nic in sys.net_io:
                net.add_metric([nic.name, "recv"], nic.bytes_recv)
                net.add_metric([nic.name, "sent"], nic.bytes_sent)
            families.append(net)
    if gpus:
        for name, doc, value in _GPU_GAUGES:
            family = Metric(name, doc, "gauge")
            for gpu in gpus:
                labels = {"id": str(gpu.id), "name": gpu.name}
                if gpu.uuid:
                    labels["uuid"] = gpu.uuid
                family.add_sample(name, labels, float(value(gpu)))
            families.append(family)
    return families


def router_families(stats: RouterStatistics) -> list[Metric]:
    """Swaps, crashes, in-flight, queue length and state, from one statistics snapshot."""
    swaps = CounterMetricFamily(
        "modelswap_swaps", "Upstream starts (swaps in) per model", labels=["model"]
    )
    crashes = CounterMetricFamily(
        "modelswap_upstream_crashes", "Ready upstreams that exited by themselves", labels=["model"]
    )
    in_flight = GaugeMetricFamily(
        "modelswap_inflight_requests", "Requests granted and not finished", labels=["model"]
    )
    states = GaugeMetricFamily(
        "modelswap_model_state",
        "1 for the model's current process state",
        labels=["model", "state"],
    )
    for model, process in stats.processes.items():
        swaps.add_metric([model], process.starts)
        crashes.add_metric([model], process.crashes)
        in_flight.add_metric([model], stats.in_flight.get(model, 0))
        for state in ProcessState:
            states.add_metric([model, state.value], 1.0 if process.state is state else 0.0)
    queue = GaugeMetricFamily(
        "modelswap_queue_length", "Requests waiting in the router's queue", value=len(stats.queue)
    )
    return [swaps, crashes, in_flight, queue, states]


class _Families(Collector):
    """A collector over a function: families built at scrape time."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()


class _Fixed(Collector):
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return [self._family]


@dataclass(slots=True)
class _ModelSeries:
    """The label children of one model, looked up once."""

    duration: Histogram
    ttfb: Histogram
    load: Histogram
    rejected: Counter


class PrometheusMetrics:
    """The ``/metrics`` of one app: feed it with :meth:`observe` and :meth:`on_fact`."""

    def __init__(
        self,
        statistics: Callable[[], RouterStatistics] | None = None,
        *,
        scraper: UpstreamScraper | None = None,
    ) -> None:
        # No *_created series: in the 0.0.4 text format they are only noise.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self.monitor: PerformanceMonitor | None = None
        """Set when the monitor starts; None: no ``llamaswap_*`` families."""
        self._statistics = statistics
        self._scraper = scraper
        self.registry.register(_Families(self._system))
        r = self.registry
        self._queue_wait = Histogram(
            "modelswap_queue_wait_seconds",
            "Time from arrival to grant, excluding the swap waited for",
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self._load = Histogram(
            "modelswap_load_duration_seconds",
            "Time for a swapped-in model to become ready",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self._ttfb = Histogram(
            "modelswap_time_to_first_byte_seconds",
            "Grant to the upstream's response headers",
            ["model"],
            buckets=TTFB_BUCKETS,
            registry=r,
        )
        self._duration = Histogram(
            "modelswap_request_duration_seconds",
            "Whole request duration",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._requests = Counter(
            "modelswap_requests", "Finished requests", ["model", "status"], registry=r
        )
        self._evictions = Counter(
            "modelswap_evictions", "Models stopped to make room", ["model", "reason"], registry=r
        )
        self._rejected = Counter(
            "modelswap_rejected", "Requests refused with 429 (concurrency limit)", ["model"],
            registry=r,
        )  # fmt: skip
        self._replayed = Counter(
            "modelswap_replayed_requests",
            "Requests re-admitted once because their upstream died before answering",
            ["model"],
            registry=r,
        )
        if statistics is not None:
            self.registry.register(_Families(self._router))
        self._models: dict[str, _ModelSeries] = {}
        self._by_status: dict[tuple[str, int], Counter] = {}
        self._by_reason: dict[tuple[str, str], Counter] = {}

    def __repr__(self) -> str:
        return f"<PrometheusMetrics models={len(self._models)} monitor={self.monitor is not None}>"

    @property
    def scraper(self) -> UpstreamScraper | None:
        return self._scraper

    # --- feeding ---------------------------------------------------------------------

    def _label(self, model: str) -> str:
        """``model``, or ``_other`` once :data:`MAX_MODEL_LABELS` names are in use."""
        if model in self._models or len(self._models) < MAX_MODEL_LABELS:
            return model
        return OTHER_MODEL

    def _series(self, label: str) -> _ModelSeries:
        series = self._models.get(label)
        if series is None:
            series = self._models[label] = _ModelSeries(
                self._duration.labels(label),
                self._ttfb.labels(label),
                self._load.labels(label),
                self._rejected.labels(label),
            )
        return series

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request (cheap: called for every request)."""
        model = self._label(record.model)
        series = self._series(model)
        key = (model, record.status)
        requests = self._by_status.get(key)
        if requests is None:
            requests = self._by_status[key] = self._requests.labels(model, str(record.status))
        requests.inc()
        series.duration.observe(record.duration_ms / 1000.0)
        if record.status == 429:
            series.rejected.inc()
        explain = record.explain
        if explain is not None:
            self._queue_wait.observe(explain.queue_ms / 1000.0)
            if explain.ttfb_ms is not None:
                series.ttfb.observe(explain.ttfb_ms / 1000.0)

    def on_replay(self, model: str) -> None:
        """A request is re-admitted after its upstream died before answering (rare: no cache)."""
        label = self._label(model)
        self._series(label)  # claims the label slot like any other model
        self._replayed.labels(label).inc()

    def on_fact(self, fact: RouterFact) -> None:
        """A router fact: evictions when a swap starts, the load time when one succeeds."""
        if isinstance(fact, SwapStarted):
            for evicted in fact.evict:
                model = self._label(evicted)
                self._series(model)  # claims the label slot like any other model
                key = (model, fact.reason)
                counter = self._by_reason.get(key)
                if counter is None:
                    counter = self._by_reason[key] = self._evictions.labels(model, fact.reason)
                counter.inc()
        elif isinstance(fact, SwapFinished) and fact.error is None:
            self._series(self._label(fact.model)).load.observe(fact.load_seconds)

    # --- scraping --------------------------------------------------------------------

    def _system(self) -> list[Metric]:
        monitor = self.monitor
        if monitor is None:
            return []
        return system_families(monitor.latest_sys(), monitor.latest_gpus())

    def _router(self) -> list[Metric]:
        return router_families(self._statistics()) if self._statistics is not None else []

    async def render(self) -> bytes:
        """The whole exposition (scrapes the upstreams first)."""
        upstream = await self._scraper.scrape() if self._scraper is not None else []
        return generate_latest(self.registry) + render_families(upstream)

    async def close(self) -> None:
        if self._scraper is not None:
            await self._scraper.close()


def render_families(families: Sequence[Metric]) -> bytes:
    """Text for families we did not build; one that cannot be written is left out alone."""
    out = []
    for family in families:
        try:
            out.append(generate_latest(_Fixed(family)))
        except Exception:
            continue
    return b"".join(out)
