"""Several emit nodes sharing the spaces: which node owns a space (rendezvous hashing
over the live nodes), the ownership leases and their fence in PostgreSQL, and the
membership service that keeps a node's leases. See docs/scaling.md."""
