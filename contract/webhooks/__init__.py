"""Webhook vocabulary shared by the gateway, the workers and the delivery worker (no I/O, no torch):
which job events become webhook messages (``events``) and which target URLs are acceptable
(``urls``)."""
