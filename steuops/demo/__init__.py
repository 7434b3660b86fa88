"""The demo: synthetic clinical notes (`notes`) and the MiniLM classifier trained on them (`model`)."""
