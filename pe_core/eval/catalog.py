"""Every task pe evaluates on, found by name: the local docstring tasks, the real-text
tasks, the training mix's held-out splits, and any task installed with mteb. Its own module
because the mix tasks build on the helpers in :mod:`pe_core.eval.tasks`."""

from __future__ import annotations

from collections.abc import Sequence

from pe_core.errors import DataError
from pe_core.eval.mix_tasks import MIX_TASKS
from pe_core.eval.tasks import LOCAL_TASKS, REAL_TASKS


def get_tasks(names: Sequence[str] | str, eval_splits: Sequence[str] | None = None) -> list:
    """Task objects by name: pe's local and real tasks, else tasks installed with mteb.

    Installed mteb tasks download their data when first evaluated (not possible offline).

    Example::

        >>> [t.metadata.name for t in get_tasks(["PELocalDocstringRetrieval"])]
        ['PELocalDocstringRetrieval']
    """
    if isinstance(names, str):
        names = [names]
    ours = {**LOCAL_TASKS, **REAL_TASKS, **MIX_TASKS}
    tasks = []
    for name in names:
        if name in ours:
            task = ours[name]()
            if eval_splits:
                task.filter_eval_splits(list(eval_splits))
        else:
            import mteb

            try:
                (task,) = mteb.get_tasks(tasks=[name], eval_splits=eval_splits)
            except (KeyError, ValueError) as e:
                raise DataError(
                    f"unknown task {name!r}: not a local task ({', '.join(ours)}) "
                    f"and mteb does not know it ({e})"
                ) from e
        tasks.append(task)
    return tasks
