"""`python -m connector` is the same as the `bybit-kafka-connector` command."""

from connector.cli import main

raise SystemExit(main())
