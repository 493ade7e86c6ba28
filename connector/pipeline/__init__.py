"""Between source and sink: events to records, duplicate drops, holding and tails."""
