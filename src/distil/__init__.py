"""distil: knowledge distillation of Hugging Face Transformers on one training loop."""

__version__ = "0.1.0"
