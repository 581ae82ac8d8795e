"""``JobCancelled``: how a long computation stops when its caller asks it to.

The curvature library checks a ``cancelled()`` callable between batches and raises this; the
pipeline (``workers/pipeline/reporting.py``) raises the same exception, so one ``except`` catches
both. It lives here, below the pipeline, so the library never imports the pipeline.
"""

from __future__ import annotations


class JobCancelled(Exception):
    """Raised inside the pipeline when the reporter says the job was cancelled."""
