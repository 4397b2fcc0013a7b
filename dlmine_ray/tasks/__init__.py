"""The task registry: adding a mining task is adding a module and one entry here (or, from a
user's own code, one ``register_task`` call)."""

from __future__ import annotations

import sys

from dlmine_ray.errors import DlmineError
from dlmine_ray.tasks.base import Results, Options, StageSetup, SupervisedTask, Task
from dlmine_ray.tasks.classify import ClassifyTask
from dlmine_ray.tasks.cluster import ClusterTask
from dlmine_ray.tasks.detect import DetectTask
from dlmine_ray.tasks.regress import RegressTask
from dlmine_ray.tasks.rules import RulesTask
from dlmine_ray.tasks.select import SelectTask

TASKS: dict[str, Task] = {t.name: t for t in (ClassifyTask(), RegressTask(), ClusterTask(), DetectTask(),
                                              RulesTask(), SelectTask())}
#: the task of a job that names none
DEFAULT_TASK = ClassifyTask.name


def get_task(name: str) -> Task:
    """Return the task object registered under ``name``; DlmineError for an unknown name."""
    try:
        return TASKS[name]
    except KeyError:
        raise DlmineError(f"unknown task '{name}'; registered tasks: {', '.join(TASKS)}") from None


def register_task(task: Task) -> Task:
    """Add ``task`` (an instance) to the registry under ``task.name``; returns it.

    A task defined outside dlmine_ray (a user's script or test) travels to Ray's workers by value,
    so that they need not import the module that defines it."""
    if not task.name or task.name in TASKS and type(TASKS[task.name]) is not type(task):
        raise ValueError(f"cannot register task {task.name!r}: the name is empty or taken")
    module = type(task).__module__
    if not module.startswith("dlmine_ray.") and module != "__main__":
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[module])
    TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task added by ``register_task`` (a test's clean-up)."""
    TASKS.pop(name, None)


__all__ = ["DEFAULT_TASK", "Task", "SupervisedTask", "Options", "StageSetup", "Results", "TASKS", "get_task", "register_task",
           "unregister_task"]
