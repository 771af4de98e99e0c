"""A log filter for Kedro's advice after a failed run, installed on the root logger's handlers.

Kedro suggests ``--from-nodes "<node>"`` after a run fails. That would load the newest saved version
of every input, and after a failure those are another, older run's: this run's outputs were set
aside as unfinished (``hooks/run_guard.py``). The advice is replaced by one that does not mix runs.
(Kedro refuses logging classes outside ``logging`` and ``kedro.logging`` in ``conf/logging.yml``,
so the filter is added by ``settings.py``.)
"""

from __future__ import annotations

import logging
import re

RESUME_ADVICE = re.compile(r"You can resume the pipeline run from the nearest nodes")
RESUME_INSTEAD = (
    "{nodes} nodes did not run. Run the same command again from the start: --from-nodes would load the newest "
    "saved inputs, and this run's were set aside as unfinished, so they would be an older run's (this run's "
    "set-aside outputs: python -m cardio_kedro.hooks.run_guard list)."
)


class ResumeAdvice(logging.Filter):
    """Replaces Kedro's ``--from-nodes`` advice after a failed run with advice that does not mix runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if RESUME_ADVICE.search(message):
            nodes = re.search(r"There are (\d+) nodes", message)
            record.msg, record.args = RESUME_INSTEAD.format(nodes=nodes.group(1) if nodes else "Some"), ()
        return True


def install_resume_advice() -> None:
    """Add ``ResumeAdvice`` to every handler of the root logger (once each)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ResumeAdvice) for f in handler.filters):
            handler.addFilter(ResumeAdvice())
