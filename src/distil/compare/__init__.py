"""``distil compare``: which method at which student size for my data, with intervals over seeds and items."""

from distil.compare.config import Cell, CompareConfig, CompareSetup, build_setup, check_models
from distil.compare.run import run_compare

__all__ = ["Cell", "CompareConfig", "CompareSetup", "build_setup", "check_models", "run_compare"]
