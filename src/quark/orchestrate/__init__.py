"""step=orchestrate: a gateway in front of several models: routing, tools, memory, async fan-out."""
