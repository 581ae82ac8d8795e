"""Signed webhook deliveries (Standard Webhooks): endpoint and delivery records in Redis, the outbox
sweep that turns job events into deliveries, the RQ job that POSTs one delivery, and the delivery
worker process. Torch-free: the gateway and ``curvedit up`` import it."""
