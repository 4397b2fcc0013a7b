"""dlmine_ray: deep-learning data mining on Ray (Data -> Train -> Tune -> outputs)."""

from dlmine_ray.errors import DlmineError
from dlmine_ray.spec import JobSpec, load_job

__version__ = "0.1.0"


def run_job(job, output="runs/latest", **kwargs):
    """Run a job (JobSpec, dict, or YAML path) into ``output``; return a RunResult."""
    from dlmine_ray.runner import run_job as _run

    return _run(job, output, **kwargs)


def predict(model, data, output, **kwargs):
    """Score ``data`` with a saved model folder into the Parquet file ``output``; return rows written."""
    from dlmine_ray.predict import predict as _predict

    return _predict(model, data, output, **kwargs)


__all__ = ["DlmineError", "JobSpec", "load_job", "run_job", "predict", "__version__"]
