"""The ``curvedit`` command line: ``up`` / ``demo`` (the stack on one machine), the job verbs over
HTTP (``submit``, ``status``, ``wait``, ``events``, ``cancel``, ``list``, ``datasets``, ``factors``)
and ``edit`` (the pipeline in-process). The entry point is ``service.cli.app:main``.

Nothing here imports torch at import time; only ``edit`` imports the workers, lazily.
"""
