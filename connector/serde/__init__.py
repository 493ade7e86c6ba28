"""Serialization: Avro encoding of records (generic and compiled) and the schema registry client."""
