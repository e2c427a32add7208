"""Service settings: one frozen dataclass, read from the environment by :meth:`Settings.from_env`.

=========================  ==================================================================  ===================
variable                   meaning                                                             default
=========================  ==================================================================  ===================
``RSCORE_API_KEYS``        comma-separated API keys accepted in the ``X-API-Key`` header;      none (loopback only)
                           each at least 16 characters. Without keys the service refuses to
                           bind anything but a loopback address.
``RSCORE_MAX_UPLOAD_MB``   largest accepted upload, in MiB (2**20 bytes); larger -> 413        100
``RSCORE_MAX_EXTRACT_MB``  most an input may expand to, in MiB, counted while expanding: a DICOM  1024
                           series uploaded as a zip, and each deflated DICOM file (uploaded,
                           a ``path`` or a job input: the readers use this setting while the
                           service runs them); larger -> 413
``RSCORE_ALLOWED_ROOTS``   server-side folders (``os.pathsep``-separated) that ``path``        none (``path``
                           inputs may name; anything that resolves outside them -> 403        inputs refused)
``RSCORE_UNPINNED_PATHS``  ``1``: accept ``RSCORE_ALLOWED_ROOTS`` where inputs cannot be pinned  ``0`` (such a
                           (not Linux: no ``O_PATH`` / ``/proc``; :mod:`rscore.service.pinning`), service refuses
                           where a process that may write under a root can swap a name for a   to start)
                           link between the check and the read; a warning is logged
``RSCORE_REQUEST_TIMEOUT_S`` seconds a request may wait in the queue plus run; then 504        300
``RSCORE_QUEUE_SIZE``      requests that may wait for a free worker; more -> 503 + Retry-After 8
``RSCORE_WORKERS``         inference worker threads (the engine is CPU-bound)                  min(2, CPUs)
``RSCORE_OUTPUT_ROOT``     folder that receives one sub-folder of outputs per result           ./rscore-out/service
``RSCORE_JOB_RUNNER``      where ``POST /v1/jobs`` runs: ``prefect`` (a Prefect flow run per   ``auto``
                           job, against ``PREFECT_API_URL``), ``inprocess`` (threads of this
                           process, jobs kept in memory) or ``auto`` (prefect when Prefect is
                           installed and ``PREFECT_API_URL`` is set, else inprocess)
``RSCORE_RESULT_TTL_S``    seconds a result folder is kept (then removed: only folders this     604800 (7 days)
                           service wrote, recognised by their marker); 0 = keep forever
``RSCORE_READ_TIMEOUT_S``  seconds a client may take to send a request's headers (else the     30
                           connection is closed) or stall while sending its body (408)
``RSCORE_JOB_WORKERS``     jobs that run at the same time; ``RSCORE_QUEUE_SIZE`` more may      1
                           wait, beyond that ``POST /v1/jobs`` answers 503 + Retry-After (the
                           prefect runner runs up to ``RSCORE_WORKERS`` inputs of a job at a
                           time, the in-process runner one)
=========================  ==================================================================  ===================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rscore.errors import OptionError
from rscore.io.deflated import env_max_extract_mb

__all__ = ["Settings", "MIN_KEY_CHARS", "JOB_RUNNERS", "default_workers"]

MIN_KEY_CHARS = 16
MIB = 1 << 20
JOB_RUNNERS = ("auto", "prefect", "inprocess")


def default_workers() -> int:
    """One or two inference threads: the engine is CPU-bound and numpy already uses several cores per call."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class Settings:
    """How the service runs. Build with :meth:`from_env` or directly (tests, embedding applications).

    ``allowed_roots`` and ``output_root`` are stored resolved (absolute, symlinks followed).
    """

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_upload_mb: float = 100.0
    allowed_roots: tuple[Path, ...] = ()
    request_timeout_s: float = 300.0
    queue_size: int = 8
    workers: int = field(default_factory=default_workers)
    output_root: Path = Path("rscore-out/service")
    job_runner: str = "auto"
    job_workers: int = 1
    result_ttl_s: float = 7 * 24 * 3600.0
    read_timeout_s: float = 30.0
    max_extract_mb: float = field(default_factory=env_max_extract_mb)  # RSCORE_MAX_EXTRACT_MB, else 1024
    unpinned_paths: bool = False  # RSCORE_UNPINNED_PATHS: allowed roots where pinning is not available

    def __post_init__(self) -> None:
        for i, key in enumerate(self.api_keys, 1):
            if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
                raise OptionError(
                    f"RSCORE_API_KEYS: key #{i} is {len(key)} characters or contains spaces; use keys of at least "
                    f"{MIN_KEY_CHARS} characters without spaces (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(24))')"
                )
        if not self.max_extract_mb > 0:
            raise OptionError(f"RSCORE_MAX_EXTRACT_MB must be positive, got {self.max_extract_mb}")
        if not self.max_upload_mb > 0:
            raise OptionError(f"RSCORE_MAX_UPLOAD_MB must be positive, got {self.max_upload_mb}")
        if not self.request_timeout_s > 0:
            raise OptionError(f"RSCORE_REQUEST_TIMEOUT_S must be positive, got {self.request_timeout_s}")
        if self.queue_size < 0:
            raise OptionError(f"RSCORE_QUEUE_SIZE must be 0 or more, got {self.queue_size}")
        if self.workers < 1:
            raise OptionError(f"RSCORE_WORKERS must be at least 1, got {self.workers}")
        runner = str(self.job_runner).strip().lower().replace("-", "")
        if runner not in JOB_RUNNERS:
            raise OptionError(f"RSCORE_JOB_RUNNER must be one of {', '.join(JOB_RUNNERS)}, got '{self.job_runner}'")
        object.__setattr__(self, "job_runner", runner)
        if not self.result_ttl_s >= 0:
            raise OptionError(f"RSCORE_RESULT_TTL_S must be 0 (keep forever) or more, got {self.result_ttl_s}")
        if not self.read_timeout_s > 0:
            raise OptionError(f"RSCORE_READ_TIMEOUT_S must be positive, got {self.read_timeout_s}")
        if self.job_workers < 1:
            raise OptionError(f"RSCORE_JOB_WORKERS must be at least 1, got {self.job_workers}")
        roots = []
        for root in self.allowed_roots:
            resolved = Path(root).expanduser().resolve()
            if not resolved.is_dir():
                raise OptionError(f"RSCORE_ALLOWED_ROOTS: {root} is not an existing folder")
            roots.append(resolved)
        object.__setattr__(self, "allowed_roots", tuple(roots))
        if roots and not self.unpinned_paths:
            from rscore.service.pinning import pinning_available

            if not pinning_available():  # fail closed: checked paths would be read by name, later
                raise OptionError(
                    "RSCORE_ALLOWED_ROOTS: this platform cannot pin a checked input (Linux's O_PATH and /proc), so a "
                    "process that may write under a root could make the service read outside it; run the service on "
                    "Linux, or set RSCORE_UNPINNED_PATHS=1 if only trusted users can write under the roots"
                )
        object.__setattr__(self, "output_root", Path(self.output_root).expanduser().resolve())
        object.__setattr__(self, "api_keys", tuple(self.api_keys))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def max_extract_bytes(self) -> int:
        return int(self.max_extract_mb * MIB)

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``RSCORE_*`` variables above; a malformed value is an :class:`OptionError` naming it."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        if env.get("RSCORE_API_KEYS", "").strip():
            kwargs["api_keys"] = tuple(k.strip() for k in env["RSCORE_API_KEYS"].split(",") if k.strip())
        if env.get("RSCORE_ALLOWED_ROOTS", "").strip():
            kwargs["allowed_roots"] = tuple(
                Path(p.strip()) for p in env["RSCORE_ALLOWED_ROOTS"].split(os.pathsep) if p.strip()
            )
        if env.get("RSCORE_OUTPUT_ROOT", "").strip():
            kwargs["output_root"] = Path(env["RSCORE_OUTPUT_ROOT"].strip())
        unpinned = env.get("RSCORE_UNPINNED_PATHS", "").strip().lower()
        if unpinned:
            if unpinned not in ("0", "1", "true", "false", "yes", "no"):
                raise OptionError(f"RSCORE_UNPINNED_PATHS must be 1 or 0, got '{unpinned}'")
            kwargs["unpinned_paths"] = unpinned in ("1", "true", "yes")
        if env.get("RSCORE_JOB_RUNNER", "").strip():
            kwargs["job_runner"] = env["RSCORE_JOB_RUNNER"].strip()
        for var, name, kind in (
            ("RSCORE_MAX_UPLOAD_MB", "max_upload_mb", float),
            ("RSCORE_MAX_EXTRACT_MB", "max_extract_mb", float),
            ("RSCORE_REQUEST_TIMEOUT_S", "request_timeout_s", float),
            ("RSCORE_QUEUE_SIZE", "queue_size", int),
            ("RSCORE_WORKERS", "workers", int),
            ("RSCORE_JOB_WORKERS", "job_workers", int),
            ("RSCORE_RESULT_TTL_S", "result_ttl_s", float),
            ("RSCORE_READ_TIMEOUT_S", "read_timeout_s", float),
        ):
            raw = env.get(var, "").strip()
            if raw:
                try:
                    kwargs[name] = kind(raw)
                except ValueError:
                    what = "a number" if kind is float else "a whole number"
                    raise OptionError(f"{var} must be {what}, got '{raw}'") from None
        return cls(**kwargs)  # type: ignore[arg-type]
