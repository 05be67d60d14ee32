"""Running evaluations and quantization sweeps as Ray tasks, on a cluster or a local Ray.

:mod:`core.cluster.session` joins a cluster (or starts Ray for one run),
:mod:`core.cluster.resources` decides what each task asks Ray for (CPU threads, a GPU, memory
estimated from the case's size), :mod:`core.cluster.tasks` runs tasks with retries when a worker
or node is lost, :mod:`core.cluster.evaluate` runs ``evaluate`` cases through it and
:mod:`core.cluster.sweep` quantizes model variants. The scoring code itself is
:func:`core.evaluation.evaluate_case`, the same one the local executor runs.
"""

from core.cluster.evaluate import run_cases_on_ray
from core.cluster.session import ClusterOptions, ray_session

__all__ = ["ClusterOptions", "ray_session", "run_cases_on_ray"]
