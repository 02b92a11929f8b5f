"""Several agents on one site (a shared PostgreSQL store): membership, buckets, takeover."""
