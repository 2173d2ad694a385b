"""rds-act: recursive transformers that decide how many steps to think."""

__version__ = "0.1.0"
