"""Settings of jobs (docs/architecture.md#jobs): how often the rollout pass runs and how much it
may do at once."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class JobSettings(BaseSettings):
    job_interval: float = Field(
        1.0, gt=0, le=60, description="seconds between two rollout passes over the running jobs (a rate faster than "
        "one run per pass creates several runs per pass)",
    )
    job_max_runs_per_pass: int = Field(
        2000, ge=1, le=100_000, description="runs one pass creates for one job at most; the rest wait for the next pass",
    )
