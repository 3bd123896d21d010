"""Several emit nodes sharing the spaces: which node owns a space (rendezvous hashing
over the live nodes), the ownership leases and their fence in PostgreSQL, the
membership service that keeps a node's leases, and forwarding a request to the owner
of its space. See docs/scaling.md."""
