"""backchannel head-end: the exchange endpoint, durable work queues, rendezvous, groups,
presence and the operator API (docs/protocol.md, docs/headend.md)."""
