"""Jobs: run folders, the job runner (worker processes, queue, cancel, resume) and job specs.

The studio and the `fourd` command line run every pipeline through :class:`JobRunner`.
"""

from pipelines.jobs.run_folder import RunFolderError, RunInfo, list_runs, read_events, read_spec, run_info
from pipelines.jobs.runner import Job, JobRunner, PreflightError
from pipelines.jobs.spec import JobSpec, SpecError

__all__ = ["Job", "JobRunner", "JobSpec", "PreflightError", "RunFolderError", "RunInfo", "SpecError", "list_runs",
           "read_events", "read_spec", "run_info"]
