"""Running several instances: shard assignment, coordination, the shard runner and handover."""
