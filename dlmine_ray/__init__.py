"""dlmine_ray: deep-learning data mining on Ray (Data -> Train -> Tune -> outputs)."""

from dlmine_ray.errors import DlmineError

__version__ = "0.1.0"


def __getattr__(name):
    # JobSpec imports the task registry and with it torch (about 1.4 s): only when asked for, so that
    # `dlmine run --address` can hand a job to a warm process without importing it (app/warm.py)
    if name == "JobSpec":
        from dlmine_ray.spec import JobSpec

        return JobSpec
    raise AttributeError(f"module 'dlmine_ray' has no attribute {name!r}")


def load_job(path, overrides=None):
    """Read and validate a YAML job file; return its JobSpec."""
    from dlmine_ray.app.jobfile import load_job as _load

    return _load(path, overrides)


def run_job(job, output="runs/latest", **kwargs):
    """Run a job (JobSpec, dict, or YAML path) into ``output``; return a RunResult."""
    from dlmine_ray.app.run import run_job as _run

    return _run(job, output, **kwargs)


def predict(model, data, output, **kwargs):
    """Score ``data`` with a saved model folder into the Parquet file ``output``; return rows written."""
    from dlmine_ray.app.predict import predict as _predict

    return _predict(model, data, output, **kwargs)


def load_model(path, threads=None):
    """A saved model folder (a run's ``model/``) loaded in this process, without Ray:
    ``load_model(path).predict(df)`` scores a pandas DataFrame and returns the prediction columns
    (the model's id column first when ``df`` has it). ``threads``: torch's threads while scoring
    (default: leave this process's setting)."""
    from dlmine_ray.app.predict import open_model

    return open_model(path, threads)


def register_task(task):
    """Add a task (an instance of a ``dlmine_ray.tasks.Task`` subclass) to the registry; return it."""
    from dlmine_ray.tasks import register_task as _register

    return _register(task)


__all__ = ["DlmineError", "JobSpec", "load_job", "run_job", "predict", "load_model", "register_task", "__version__"]
