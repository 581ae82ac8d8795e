"""Redis-backed state both sides write: job records and events (``jobs``), the pipeline reporter
backed by them (``reporter``) and the RQ queue helpers (``queue``). No torch here."""
