"""REST bodies of releases (`/api/v1/releases`, docs/architecture.md#remote-update); the wire side
(the `update` task's params, the signed message) is `schemas.releases`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import StrictModel, UtcDatetime
from schemas.jobs import AbortRule, Rollout
from schemas.targets import Target


class ReleaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: str
    file_name: str
    file_id: str
    size: int
    sha256: str
    signature: str
    created_at: UtcDatetime
    params: dict[str, object] | None = Field(
        None, description="the `update` task params for this release, with a fresh signed link (a single release only)",
    )


class ReleaseRollout(StrictModel):
    """`POST /api/v1/releases/{version}/rollout`: update the target's devices, as a job of `update` runs."""

    target: Target
    rollout: Rollout | None = Field(None, description="how fast devices update; all at once when absent")
    abort: list[AbortRule] = Field(default_factory=list, max_length=10, description="abort rules, any of which stops it")
    drain_timeout: float | None = Field(None, ge=0, le=3600, description="seconds running tasks get to finish first")
    timeout: float | None = Field(None, gt=0, le=86_400, description="seconds one device's update may take")
    name: str | None = Field(None, min_length=1, max_length=200)
