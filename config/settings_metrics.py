"""Settings of the Prometheus endpoint `/metrics` (docs/architecture.md#statistics-and-metrics)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class MetricsSettings(BaseSettings):
    metrics_public: bool = Field(
        False, description="serve /metrics without a token (only where the API port is reachable by trusted hosts "
        "alone); by default a scrape needs a read-scope API token (Authorization: Bearer)",
    )
    metrics_cache_seconds: float = Field(
        5.0, ge=0, le=300, description="seconds the database-backed gauges of /metrics are reused between scrapes, "
        "so a scrape storm costs the database at most one set of COUNT queries per period",
    )
