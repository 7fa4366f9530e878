"""The shapes of the agent's answers: the status answer is built with them, the CLI reads every answer through
them, and the OpenAPI document (schemas/agent-api.openapi.yaml) says the same, checked against the running agent
by the contract tests. (Deployments are folded from the audit log as plain dicts of this shape.)"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

DeploymentState = Literal["running", "succeeded", "failed", "interrupted"]
StepState = Literal["pending", "running", "succeeded", "failed", "skipped"]


class AuditHeadDict(TypedDict):
    seq: int
    hash: str


class OriginDict(TypedDict, total=False):
    run_url: str
    actor: str
    repository: str
    sha: str
    ref: str
    workflow: str
    verified: bool


class StepDict(TypedDict):
    action: str
    name: str
    state: StepState
    started_at: str | None
    finished_at: str | None
    message: str


class ErrorDict(TypedDict):
    step: str
    message: str


class DeploymentDict(TypedDict):
    id: str
    environment: str
    image: str
    tag: str
    digest: str | None
    actor: str
    origin: OriginDict | None
    state: DeploymentState
    created_at: str
    finished_at: str | None
    steps: list[StepDict]
    error: ErrorDict | None
    logs: NotRequired[list[str]]
    audit_head: AuditHeadDict


class LastDeploymentDict(TypedDict):
    id: str
    state: DeploymentState
    tag: str
    finished_at: str | None


class EnvironmentStatusDict(TypedDict):
    container: str
    state: str
    image: str | None
    digest: str | None
    started_at: str | None
    restart_count: int
    last_deployment: LastDeploymentDict | None


class DiskDict(TypedDict):
    state_dir_free_bytes: int


class AgentStatusDict(TypedDict):
    version: str
    docker: Literal["reachable", "unreachable"]
    audit: Literal["ok", "broken"]
    audit_problem: NotRequired[str | None]
    deploy_in_progress: str | None
    disk: NotRequired[DiskDict | None]


class StatusDict(TypedDict):
    agent: AgentStatusDict
    environments: dict[str, EnvironmentStatusDict]


class LogLineDict(TypedDict):
    time: str | None
    stream: Literal["stdout", "stderr"]
    text: str


class LogsDict(TypedDict):
    environment: str
    container: str
    state: str
    lines: list[LogLineDict]
    truncated: bool
    container_id: NotRequired[str]
    deployment_id: NotRequired[str | None]
