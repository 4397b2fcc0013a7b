"""The task registry: adding a mining task is adding a module and one entry here."""

from dlmine_ray.tasks.base import Task
from dlmine_ray.tasks.classify import ClassifyTask
from dlmine_ray.tasks.cluster import ClusterTask
from dlmine_ray.tasks.detect import DetectTask
from dlmine_ray.tasks.regress import RegressTask
from dlmine_ray.tasks.rules import RulesTask

TASKS: dict[str, Task] = {"classify": ClassifyTask(), "regress": RegressTask(), "cluster": ClusterTask(),
                          "detect": DetectTask(), "rules": RulesTask()}


def get_task(name: str) -> Task:
    """Return the task object registered under ``name``."""
    return TASKS[name]


__all__ = ["Task", "TASKS", "get_task"]
