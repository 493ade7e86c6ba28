"""Configuration: the dataclasses, loading (YAML, env, secret files), limits, JSON Schema."""
