"""Live streams of job events over WebSockets (spec §6), fed after events are durable."""
