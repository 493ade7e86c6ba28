"""Archiving records to files and replaying them into Kafka."""
