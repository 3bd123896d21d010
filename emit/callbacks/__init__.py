"""Webhook callbacks (spec §5): a durable outbox and the actor that delivers it."""
