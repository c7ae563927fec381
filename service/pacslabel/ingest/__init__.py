"""Ingest: storage SCP, durable spool, job queue, de-identifying forwarding workers, routing, quarantine."""
