"""Kafka output: the sink, the producer backends, topic administration and the broker probe."""
