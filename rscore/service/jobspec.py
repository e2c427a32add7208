"""What a batch job is, and the checks made when one is submitted (shared by every job runner).

:class:`JobSpec` (what to run), :class:`JobItem` / :class:`JobStatus` (what is reported), the :class:`JobRunner`
interface, and :func:`check_job`: the whole request checked against the flow registry
(:func:`rscore.flowspec.flow_specs`) *before* anything is queued or created, so that a bad flow, flow option or
``-O`` option is an :class:`~rscore.errors.OptionError` (HTTP 400 at ``POST /v1/jobs``, exit 2 for ``rscore flows
run``), never a failed item later. :mod:`rscore.service.jobs` (in-process runner) and
:mod:`rscore.service.prefect_jobs` both import from here and not from each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rscore.errors import OptionError
from rscore.flowspec import FlowSpec, check_item_options, flow_specs, get_flow

if TYPE_CHECKING:
    from rscore.plugins import Registry

__all__ = [
    "JobSpec", "JobItem", "JobStatus", "JobRunner", "MAX_JOB_INPUTS", "DEFAULT_FLOW", "final_state", "check_job",
    "check_flow_options", "flow_names",
]  # fmt: skip

MAX_JOB_INPUTS = 1000
DEFAULT_FLOW = "segment-batch"


@dataclass(frozen=True)
class JobSpec:
    """What to run: every input (already checked against the allowed roots) with one query, plugin and options."""

    inputs: tuple[Path, ...]
    query: str
    plugin: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    flow: str = DEFAULT_FLOW
    flow_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobItem:
    """One input of a job. ``state``: queued | running | succeeded | failed | cancelled; ``seconds`` of run time."""

    input: str
    state: str = "queued"
    result_id: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    absent: bool | None = None
    instance_count: int | None = None
    confidence: float | None = None
    caveats: tuple[str, ...] = ()
    error: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job. ``state``: queued | running | succeeded | partial | failed | cancelled.

    ``partial`` = some inputs failed and some succeeded. Times are ISO 8601 UTC strings. ``result_id`` and
    ``outputs``: job-level outputs (a flow's summary and report), when the flow writes any.
    """

    id: str
    state: str
    runner: str
    query: str
    plugin: str | None
    submitted: str
    started: str | None = None
    finished: str | None = None
    items: tuple[JobItem, ...] = ()
    flow: str = DEFAULT_FLOW
    result_id: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    message: str | None = None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "partial", "failed", "cancelled")


@runtime_checkable
class JobRunner(Protocol):
    """Where jobs run. The service calls only these."""

    name: str
    flows: tuple[str, ...]

    def submit(self, spec: JobSpec) -> JobStatus:
        """Check the job (:func:`check_job`: :class:`OptionError` before anything is queued), accept it (raise
        :class:`~rscore.service.pool.QueueFull` when at capacity) and return its status."""
        ...

    def status(self, job_id: str) -> JobStatus | None:
        """The job's current status, or ``None`` when unknown (never submitted, or forgotten)."""
        ...

    def stats(self) -> Mapping[str, Any]:
        """Counters for ``/healthz``."""
        ...

    def close(self) -> None:
        """Stop accepting jobs and release resources (stop running ones if they are in this process)."""
        ...


def final_state(items: tuple[JobItem, ...]) -> str:
    """A finished job's state from its items' states."""
    states = {i.state for i in items}
    if "cancelled" in states:
        return "cancelled"
    if states == {"succeeded"}:
        return "succeeded"
    if "succeeded" in states:
        return "partial"
    return "failed"


def flow_names(registry: Registry, *, per_input_only: bool = False) -> tuple[str, ...]:
    """The flows of the registry (only those an in-process runner can run with ``per_input_only``)."""
    return tuple(n for n, s in flow_specs(registry).items() if s.per_input or not per_input_only)


def check_flow_options(
    flow: str,
    options: Mapping[str, Any],
    resolve_path: Callable[[str, str], Path] | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """The per-job flow parameters a client gave (``flow_options``), checked against the flow's declared
    :class:`~rscore.flowspec.FlowParam` with ``job=True`` (unknown flow or parameter, wrong type -> 
    :class:`OptionError`); ``resolve_path(value, what)`` confines paths to the allowed roots. ``registry``: where
    the flows come from (default: the installed plugins, :func:`rscore.engine.default_registry`)."""
    if registry is None:
        from rscore.engine import default_registry

        registry = default_registry()
    spec = get_flow(flow, registry)
    return spec.check_params(options, job=True, resolve_path=resolve_path, prefix="flow_options.")


def check_job(
    job: JobSpec,
    registry: Registry,
    offered: tuple[str, ...],
    runner: str,
    resolve_path: Callable[[str, str], Path] | None = None,
) -> tuple[FlowSpec, JobSpec]:
    """Everything about ``job`` that can be checked before it runs; returns its flow and the job with its
    ``flow_options`` converted (paths confined by ``resolve_path``, the service's allowed roots, when given: a
    runner confines them itself whatever its caller did). Raises :class:`OptionError` (or
    :class:`~rscore.errors.PluginError`: an unknown plugin or backend; a path outside the roots: 403) for: an
    unknown flow or one this runner does not offer, a missing query, a plugin the flow does not run, bad
    ``flow_options``, ``-O`` options nobody declares or with bad values."""
    spec = get_flow(job.flow, registry)
    if job.flow not in offered:
        raise OptionError(
            f"flow '{job.flow}' is not offered by this service's job runner ({runner}: {', '.join(offered)}); "
            "flows that aggregate their inputs need the Prefect job runner (RSCORE_JOB_RUNNER=prefect and "
            "PREFECT_API_URL)"
        )
    if not job.inputs:
        raise OptionError("give at least one input")
    spec.check_query(job.query)
    spec.check_plugin(job.plugin)
    registry.require_plugin(job.plugin or spec.plugin)
    flow_options = spec.check_params(job.flow_options, job=True, resolve_path=resolve_path, prefix="flow_options.")
    check_item_options(job.options, registry)
    return spec, replace(job, flow_options=flow_options)


def service_limits(runner: Any) -> AbstractContextManager[None]:
    """The service's reader limits while a job's inputs are read: its extraction limit (``max_extract_mb``) for
    deflated inputs (:func:`rscore.io.deflated.extract_limit`), set on the runner by :func:`make_job_runner`."""
    from rscore.io.deflated import extract_limit

    limit = getattr(runner, "extract_limit_bytes", None)
    return extract_limit(limit) if limit else nullcontext()
