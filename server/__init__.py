"""Consumer catalog API service (Robyn + core_ext + asyncpg + Redis)."""
