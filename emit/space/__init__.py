"""The space actor: one per space, owner of its queue, its deadlines and its jobs."""
