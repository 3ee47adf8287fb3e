"""The shared training loop and what it needs: optimisation, checkpoints, logging, export."""
