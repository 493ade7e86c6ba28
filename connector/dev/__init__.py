"""Development and test infrastructure: a real local Kafka broker, a real
schema registry, and helpers to read back what the connector wrote. Not used
by ``run``."""
