"""Step 5, align: DPO, reward models and GRPO on the shared training core (docs/align.md)."""
