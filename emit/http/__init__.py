"""The HTTP API of spec §1, §2, §4 and §7: Quart-Trio served by Hypercorn's trio worker.
Routes hold no business logic: they parse, authorize, send a message, render the reply."""
