"""Several emit nodes sharing the spaces: who owns a space, and reaching its owner."""
