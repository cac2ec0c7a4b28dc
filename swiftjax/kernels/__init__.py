"""Native kernels (built on first use) with jnp reference paths; see each module."""
