"""Re-export each running upstream's own ``/metrics`` with a ``model`` label added.

llama-server serves Prometheus text at ``/metrics`` when started with
``--metrics``; vLLM always does. At every scrape of our ``/metrics`` the
:class:`UpstreamScraper` asks each *ready* local model's upstream for its
metrics (concurrently, 1 s each) and returns the families merged by name, each
sample labelled ``model="<id>"`` — a ``model`` label the upstream already had
is kept as ``exported_model``, Prometheus's own convention. Nothing is ever
loaded to be scraped.

Upstreams that have no metrics are remembered, per process start: an answer
that is not 200, not Prometheus text (by ``Content-Type``), larger than
:data:`MAX_BODY` or unparsable marks the model "no metrics" until its process
is started again (a restart may come with different flags). A timeout or a
refused/reset connection is *not* remembered — a busy upstream may answer next
time. Families whose names start with ``llamaswap_`` or ``modelswap_`` are ours
and are dropped from upstream output, so a clash never breaks our exposition;
a family written under a name an earlier model used with a different type is
skipped for the later one, and families without samples are left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("modelswap.metrics")

SCRAPE_TIMEOUT = 1.0
MAX_BODY = 8 * 1024 * 1024
OWN_PREFIXES = ("llamaswap_", "modelswap_")
PROMETHEUS_TYPES = ("", "text/plain", "application/openmetrics-text")


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One ready upstream: its model, its metrics URL, and which start of its process."""

    model: str
    url: str
    generation: int


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    content_type: str
    body: bytes


Fetch = Callable[[str], Awaitable[Fetched]]
"""GET a URL; transport failures raise (``aiohttp.ClientError``, ``OSError``, timeouts)."""


class NoMetrics(Exception):
    """The upstream answered, and the answer says it has no Prometheus metrics."""


def parse_metrics(fetched: Fetched) -> list[Metric]:
    """The families in an answer, or :class:`NoMetrics` saying why there are none."""
    if fetched.status != 200:
        raise NoMetrics(f"status {fetched.status}")
    media = fetched.content_type.partition(";")[0].strip().lower()
    if media not in PROMETHEUS_TYPES:
        raise NoMetrics(f"content type {media!r}")
    if len(fetched.body) > MAX_BODY:
        raise NoMetrics("body too large")
    try:
        return list(text_string_to_metric_families(fetched.body.decode("utf-8", "replace")))
    except Exception as error:  # the parser raises ValueError, IndexError, … on garbage
        raise NoMetrics(f"unparsable: {error}") from None


def _exposed_name(family: Metric) -> str:
    """The name the family is written under (a counter ``x`` is written ``x_total``)."""
    suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
    return family.name + suffix


def merge_families(per_model: Sequence[tuple[str, Sequence[Metric]]]) -> list[Metric]:
    """One family per name, every sample labelled with its model (see module docstring)."""
    merged: dict[str, Metric] = {}
    for model, families in per_model:
        for family in families:
            exposed = _exposed_name(family)
            if not family.samples or exposed.startswith(OWN_PREFIXES):
                continue
            target = merged.get(exposed)
            if target is None:
                target = Metric(family.name, family.documentation, family.type, family.unit)
                merged[exposed] = target
            elif target.type != family.type or target.name != family.name:
                continue
            for sample in family.samples:
                labels = dict(sample.labels)
                if "model" in labels:
                    labels["exported_model"] = labels.pop("model")
                labels["model"] = model
                target.samples.append(sample._replace(labels=labels))
    return list(merged.values())


class UpstreamScraper:
    """Scrapes the upstreams ``targets()`` names; see the module docstring for the rules."""

    def __init__(
        self,
        targets: Callable[[], Sequence[ScrapeTarget]],
        *,
        fetch: Fetch | None = None,
        timeout: float = SCRAPE_TIMEOUT,
    ) -> None:
        self._targets = targets
        self._fetch = fetch if fetch is not None else self._http_get
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._no_metrics: dict[str, int] = {}  # model → the process start that had none

    def __repr__(self) -> str:
        return f"<UpstreamScraper no_metrics={sorted(self._no_metrics)}>"

    @property
    def without_metrics(self) -> dict[str, int]:
        """Models known to have no metrics, with the process start that said so."""
        return dict(self._no_metrics)

    async def scrape(self) -> list[Metric]:
        targets = [t for t in self._targets() if self._no_metrics.get(t.model, -1) != t.generation]
        if not targets:
            return []
        results = await asyncio.gather(*(self._scrape_one(t) for t in targets))
        return merge_families(
            [(t.model, families) for t, families in zip(targets, results, strict=True)]
        )

    async def _scrape_one(self, target: ScrapeTarget) -> list[Metric]:
        try:
            async with asyncio.timeout(self._timeout):
                fetched = await self._fetch(target.url)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            log.debug("metrics of %s not scraped: %s", target.model, error)
            return []
        try:
            return parse_metrics(fetched)
        except NoMetrics as why:
            log.debug("%s has no metrics (%s); not asking again until it restarts", target, why)
            self._no_metrics[target.model] = target.generation
            return []

    async def _http_get(self, url: str) -> Fetched:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=2),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        async with self._session.get(url, allow_redirects=False) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:  # parse_metrics refuses it; stop reading here
                    break
            content_type = response.headers.get("Content-Type", "")
            return Fetched(response.status, content_type, b"".join(chunks))

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
