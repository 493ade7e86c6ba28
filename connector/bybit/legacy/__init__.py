"""The legacy spot protocol: its frames, its session protocol and its feed family."""
