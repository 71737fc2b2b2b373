"""``/metrics`` families: llama-swap's gauges, modelswap's own, and re-exported upstreams."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelswap.core.scheduler import SchedulerStats
from modelswap.observability import prometheus
from modelswap.observability.performance import NetIo, PerformanceMonitor, SysSample
from modelswap.observability.prometheus import PrometheusMetrics
from modelswap.observability.records import Explain, RequestRecord
from modelswap.observability.upstream_metrics import (
    Fetched,
    ScrapeTarget,
    UpstreamScraper,
    merge_families,
    parse_metrics,
)
from modelswap.process import ProcessState, ProcessStatistics
from modelswap.router.facts import SwapFinished, SwapStarted
from modelswap.router.runtime import RouterStatistics
from tests.fake_gpu import FakeGpu, gpu_sample

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MB = 1024 * 1024
Labels = tuple[tuple[str, str], ...]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of an exposition by (name, sorted labels); parsing it is the format check."""
    out: dict[tuple[str, Labels], float] = {}
    names: list[str] = []
    for family in text_string_to_metric_families(text):
        names.append(family.name)
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert len(names) == len(set(names)), f"duplicate families: {names}"
    return out


def value(text: str, metric: str, /, **labels: str) -> float:
    return samples(text)[(metric, tuple(sorted(labels.items())))]


ETH0 = (NetIo("eth0", 10, 20),)


def sys_sample(timestamp: datetime = T0, nics: tuple[NetIo, ...] = ETH0) -> SysSample:
    return SysSample(
        timestamp=timestamp,
        cpu_util_per_core=(12.5, 80.0),
        mem_total_mb=32000,
        mem_used_mb=12000,
        mem_free_mb=20000,
        swap_total_mb=2048,
        swap_used_mb=16,
        load_avg_1=1.5,
        load_avg_5=1.0,
        load_avg_15=0.25,
        net_io=nics,
    )


async def with_monitor(gpu: FakeGpu | None, sample: SysSample | None = None) -> PrometheusMetrics:
    metrics = PrometheusMetrics()
    m = PerformanceMonitor(
        5.0, gpu=gpu, read_sys=lambda ts: sample or sys_sample(ts), wall=lambda: T0
    )
    await m.sample_now()
    metrics.monitor = m
    return metrics


def record(model: str = "m", status: int = 200, explain: Explain | None = None) -> RequestRecord:
    return RequestRecord(
        request_id=1,
        model=model,
        method="POST",
        req_path="/v1/chat/completions",
        started_wall=0.0,
        ended_wall=1.0,
        duration_ms=1500.0,
        status=status,
        resp_content_type="application/json",
        explain=explain,
    )


# --- llama-swap's gauges -------------------------------------------------------------------


async def test_host_gauges_from_the_latest_sample() -> None:
    text = (await (await with_monitor(None)).render()).decode()
    assert value(text, "llamaswap_cpu_util_percent", core="1") == 80.0
    assert value(text, "llamaswap_memory_total_bytes") == 32000 * MB
    assert value(text, "llamaswap_memory_used_bytes") == 12000 * MB
    assert value(text, "llamaswap_memory_free_bytes") == 20000 * MB
    assert value(text, "llamaswap_swap_total_bytes") == 2048 * MB
    assert value(text, "llamaswap_swap_used_bytes") == 16 * MB
    assert value(text, "llamaswap_load_average", interval="15m") == 0.25
    assert value(text, "llamaswap_network_bytes_total", interface="eth0", direction="sent") == 20
    assert "# TYPE llamaswap_network_bytes_total counter" in text
    assert "# TYPE llamaswap_memory_used_bytes gauge" in text
    assert "# HELP llamaswap_cpu_util_percent CPU utilization per core (0-100)" in text
    assert "llamaswap_gpu_" not in text


async def test_network_family_only_when_nics_reported() -> None:
    text = (await (await with_monitor(None, sys_sample(nics=()))).render()).decode()
    assert "llamaswap_network_bytes_total" not in text
    assert "llamaswap_load_average" in text


async def test_gpu_gauges_per_gpu_with_id_name_uuid() -> None:
    gpu = FakeGpu(readings=[gpu_sample(1), gpu_sample(0, uuid="")])
    text = (await (await with_monitor(gpu)).render()).decode()
    one = {"id": "1", "name": "Fake GPU 1", "uuid": "GPU-fake-1"}
    assert value(text, "llamaswap_gpu_temperature_celsius", **one) == 61
    assert value(text, "llamaswap_gpu_vram_temperature_celsius", **one) == 0
    assert value(text, "llamaswap_gpu_util_percent", **one) == 50.5
    assert value(text, "llamaswap_gpu_memory_util_percent", **one) == 25.0
    assert value(text, "llamaswap_gpu_memory_used_bytes", **one) == 6144 * MB
    assert value(text, "llamaswap_gpu_memory_total_bytes", **one) == 24576 * MB
    assert value(text, "llamaswap_gpu_fan_speed_percent", **one) == 40.0
    assert value(text, "llamaswap_gpu_power_draw_watts", **one) == 250.5
    # No uuid: the label is left out, as llama-swap does.
    assert value(text, "llamaswap_gpu_temperature_celsius", id="0", name="Fake GPU 0") == 60
    lines = [ln for ln in text.splitlines() if ln.startswith("llamaswap_gpu_temperature_celsius")]
    assert [ln.split('id="')[1][0] for ln in lines] == ["0", "1"]  # sorted by id


async def test_label_values_are_escaped() -> None:
    name = 'A "quoted" \\ name\nline two'
    gpu = FakeGpu(readings=[gpu_sample(0, name=name)])
    text = (await (await with_monitor(gpu)).render()).decode()
    assert 'name="A \\"quoted\\" \\\\ name\\nline two"' in text
    assert value(text, "llamaswap_gpu_util_percent", id="0", name=name, uuid="GPU-fake-0") == 50.5


async def test_nothing_from_the_monitor_before_a_sample_or_without_one() -> None:
    metrics = PrometheusMetrics()
    assert b"llamaswap_" not in await metrics.render()
    metrics.monitor = PerformanceMonitor(5.0, read_sys=sys_sample, wall=lambda: T0)
    assert b"llamaswap_" not in await metrics.render()


# --- modelswap's own families --------------------------------------------------------------


async def test_observe_counts_requests_durations_ttfb_queue_and_429s() -> None:
    metrics = PrometheusMetrics()
    explain = Explain(queue_ms=250.0, ttfb_ms=40.0)
    metrics.observe(record("a", 200, explain))
    metrics.observe(record("a", 200, explain))
    metrics.observe(record("a", 429))
    metrics.observe(record("b", 502, Explain(queue_ms=0.0)))
    text = (await metrics.render()).decode()
    assert value(text, "modelswap_requests_total", model="a", status="200") == 2
    assert value(text, "modelswap_requests_total", model="a", status="429") == 1
    assert value(text, "modelswap_requests_total", model="b", status="502") == 1
    assert value(text, "modelswap_rejected_total", model="a") == 1
    assert value(text, "modelswap_rejected_total", model="b") == 0
    assert value(text, "modelswap_request_duration_seconds_count", model="a") == 3
    assert value(text, "modelswap_request_duration_seconds_sum", model="a") == 4.5
    assert value(text, "modelswap_time_to_first_byte_seconds_count", model="a") == 2
    assert value(text, "modelswap_time_to_first_byte_seconds_sum", model="a") == pytest.approx(0.08)
    assert value(text, "modelswap_time_to_first_byte_seconds_count", model="b") == 0
    # Queue wait: every request with an explain (3 of 4), unlabelled.
    assert value(text, "modelswap_queue_wait_seconds_count") == 3
    assert value(text, "modelswap_queue_wait_seconds_sum") == 0.5
    assert value(text, "modelswap_queue_wait_seconds_bucket", le="0.25") == 3
    assert "_created" not in text


async def test_facts_count_evictions_and_load_durations() -> None:
    metrics = PrometheusMetrics()
    metrics.on_fact(SwapStarted(1, "c", ("a", "b"), "group", 10.0))
    metrics.on_fact(SwapStarted(2, "a", ("c",), "maxWait", 20.0))
    metrics.on_fact(SwapFinished(1, "c", ("a", "b"), "group", 10.0, 11.0, 14.5, None))
    metrics.on_fact(SwapFinished(2, "a", ("c",), "maxWait", 20.0, 20.0, 21.0, "exit 1"))
    text = (await metrics.render()).decode()
    assert value(text, "modelswap_evictions_total", model="a", reason="group") == 1
    assert value(text, "modelswap_evictions_total", model="b", reason="group") == 1
    assert value(text, "modelswap_evictions_total", model="c", reason="maxWait") == 1
    assert value(text, "modelswap_load_duration_seconds_count", model="c") == 1
    # Load time excludes the evictions (10.0 → 11.0).
    assert value(text, "modelswap_load_duration_seconds_sum", model="c") == 3.5
    assert value(text, "modelswap_load_duration_seconds_count", model="a") == 0  # failed load


async def test_model_labels_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus, "MAX_MODEL_LABELS", 2)
    metrics = PrometheusMetrics()
    for model in ("a", "b", "c", "d", "a"):
        metrics.observe(record(model))
    text = (await metrics.render()).decode()
    assert value(text, "modelswap_requests_total", model="a", status="200") == 2
    assert value(text, "modelswap_requests_total", model="_other", status="200") == 2
    assert ("modelswap_requests_total", (("model", "c"), ("status", "200"))) not in samples(text)


def process(model: str, state: ProcessState, starts: int, crashes: int = 0) -> ProcessStatistics:
    return ProcessStatistics(model, state, None, None, 0, None, starts, max(0, starts - 1), crashes)


def statistics() -> RouterStatistics:
    scheduler = SchedulerStats(
        queue=((7, "b"), (8, "b")),
        swaps=(),
        unloading=(),
        in_flight={"a": 2},
        reservations={},
        shutting_down=False,
        now=0.0,
    )
    return RouterStatistics(
        name="group",
        scheduler=scheduler,
        processes={
            "a": process("a", ProcessState.READY, starts=3, crashes=1),
            "b": process("b", ProcessState.STOPPED, starts=0),
        },
        tickets=0,
        swap_workers=0,
        tasks=0,
        undelivered_grants=0,
        shutting_down=False,
        closed=False,
    )


async def test_router_families_are_read_at_scrape_time() -> None:
    metrics = PrometheusMetrics(statistics)
    text = (await metrics.render()).decode()
    assert "# TYPE modelswap_swaps_total counter" in text
    assert value(text, "modelswap_swaps_total", model="a") == 3
    assert value(text, "modelswap_swaps_total", model="b") == 0
    assert value(text, "modelswap_upstream_crashes_total", model="a") == 1
    assert value(text, "modelswap_inflight_requests", model="a") == 2
    assert value(text, "modelswap_inflight_requests", model="b") == 0
    assert value(text, "modelswap_queue_length") == 2
    assert value(text, "modelswap_model_state", model="a", state="ready") == 1
    assert value(text, "modelswap_model_state", model="a", state="stopped") == 0
    assert value(text, "modelswap_model_state", model="b", state="stopped") == 1
    states = [k for k, v in samples(text).items() if k[0] == "modelswap_model_state" and v == 1]
    assert len(states) == 2  # exactly one current state per model


# --- re-exported upstream metrics -----------------------------------------------------------

LLAMA = (
    "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
    "# TYPE llamacpp:prompt_tokens_total counter\n"
    "llamacpp:prompt_tokens_total {n}\n"
    "# HELP llamacpp:kv_cache_usage_ratio KV-cache usage.\n"
    "# TYPE llamacpp:kv_cache_usage_ratio gauge\n"
    'llamacpp:kv_cache_usage_ratio{{model="inner"}} 0.5\n'
    "# TYPE modelswap_requests_total counter\n"
    "modelswap_requests_total 999\n"
)
PLAIN = "text/plain; version=0.0.4"


class FakeUpstreams:
    """``fetch`` for the scraper: URL → answer, or an exception to raise; counts calls."""

    def __init__(self, answers: dict[str, Fetched | Exception]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def fetch(self, url: str) -> Fetched:
        self.calls.append(url)
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer


def text_answer(text: str, content_type: str = PLAIN, status: int = 200) -> Fetched:
    return Fetched(status, content_type, text.encode())


async def test_reexport_adds_the_model_label_and_merges_families_by_name() -> None:
    upstreams = FakeUpstreams(
        {
            "http://a/metrics": text_answer(LLAMA.format(n=10)),
            "http://b/metrics": text_answer(LLAMA.format(n=20)),
        }
    )
    targets = [ScrapeTarget("a", "http://a/metrics", 1), ScrapeTarget("b", "http://b/metrics", 1)]
    metrics = PrometheusMetrics(
        statistics, scraper=UpstreamScraper(lambda: targets, fetch=upstreams.fetch)
    )
    metrics.observe(record("a"))
    text = (await metrics.render()).decode()
    assert value(text, "llamacpp:prompt_tokens_total", model="a") == 10
    assert value(text, "llamacpp:prompt_tokens_total", model="b") == 20
    assert text.count("# TYPE llamacpp:prompt_tokens_total counter") == 1
    # The upstream's own model label survives as exported_model.
    assert value(text, "llamacpp:kv_cache_usage_ratio", model="b", exported_model="inner") == 0.5
    # A clash with our own family never reaches the output: ours stays intact.
    assert value(text, "modelswap_requests_total", model="a", status="200") == 1
    assert "999" not in text


@pytest.mark.parametrize(
    "answer",
    [
        text_answer("this is not { prometheus"),
        text_answer('{"path": "/metrics"}', content_type="application/json"),
        text_answer("501: start it with --metrics", status=501),
        text_answer("not found", status=404),
        Fetched(200, PLAIN, b"a 1\n" * (5 * 1024 * 1024)),
    ],
    ids=["garbage", "json", "501", "404", "huge"],
)
async def test_upstreams_without_metrics_are_skipped_and_not_asked_again(answer: Fetched) -> None:
    upstreams = FakeUpstreams(
        {"http://a/metrics": text_answer(LLAMA.format(n=1)), "http://b/metrics": answer}
    )
    targets = [ScrapeTarget("a", "http://a/metrics", 1), ScrapeTarget("b", "http://b/metrics", 4)]
    scraper = UpstreamScraper(lambda: targets, fetch=upstreams.fetch)
    metrics = PrometheusMetrics(scraper=scraper)
    for _ in range(2):
        text = (await metrics.render()).decode()
        assert value(text, "llamacpp:prompt_tokens_total", model="a") == 1
        assert 'model="b"' not in text
    assert upstreams.calls.count("http://b/metrics") == 1
    assert scraper.without_metrics == {"b": 4}
    targets[1] = ScrapeTarget("b", "http://b/metrics", 5)  # restarted: asked again
    await metrics.render()
    assert upstreams.calls.count("http://b/metrics") == 2


async def test_transport_errors_are_skipped_but_asked_again() -> None:
    upstreams = FakeUpstreams({"http://a/metrics": ConnectionResetError("reset")})
    scraper = UpstreamScraper(
        lambda: [ScrapeTarget("a", "http://a/metrics", 1)], fetch=upstreams.fetch
    )
    assert await scraper.scrape() == []
    assert await scraper.scrape() == []
    assert len(upstreams.calls) == 2
    assert scraper.without_metrics == {}


def test_a_family_with_another_type_under_a_known_name_is_skipped() -> None:
    first = parse_metrics(text_answer("# TYPE x_total gauge\nx_total 1\n"))
    second = parse_metrics(text_answer("# TYPE x_total counter\nx_total 2\n"))
    (merged,) = merge_families([("a", first), ("b", second)])
    assert [(s.labels["model"], s.value) for s in merged.samples] == [("a", 1.0)]
    # Written out, there is one family of that name: the exposition stays valid.
    text = prometheus.render_families([merged]).decode()
    assert samples(text) == {("x_total", (("model", "a"),)): 1.0}


@pytest.mark.parametrize(
    "body",
    [
        "# TYPE x counter\nx_total 1\n# TYPE x gauge\n",  # TYPE twice, sample under neither
        '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 2\n',
        '# TYPE odd gauge\nodd{path="a\\"b\\\\c\\nd"} 1\n',
        "# HELP llamacpp:x Help with \\ and \\n.\n# TYPE llamacpp:x gauge\nllamacpp:x NaN\n",
        "",
    ],
    ids=["double-type", "histogram", "escapes", "colon-nan", "empty"],
)
async def test_odd_but_parsable_answers_keep_the_exposition_valid(body: str) -> None:
    upstreams = FakeUpstreams({"http://a/metrics": text_answer(body)})
    metrics = PrometheusMetrics(
        statistics,
        scraper=UpstreamScraper(
            lambda: [ScrapeTarget("a", "http://a/metrics", 1)], fetch=upstreams.fetch
        ),
    )
    text = (await metrics.render()).decode()
    parsed = samples(text)  # parses, no family twice
    assert parsed[("modelswap_swaps_total", (("model", "a"),))] == 3
    reexported = [k for k in parsed if ("model", "a") in k[1] and not k[0].startswith("modelswap")]
    assert bool(reexported) == bool(body)
