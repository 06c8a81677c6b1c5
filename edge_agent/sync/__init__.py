"""The sender: the outbox drained over HTTP to central and to Segment-compatible destinations."""
