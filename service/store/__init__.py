"""Gateway-only Redis records: uploaded datasets and the factor-cache listing/deletion.

The job store, reporter and queue helpers shared with the workers live in ``contract.store``.
"""
