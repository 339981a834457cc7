"""Vision Recipes: fine-tune and publish Hugging Face vision models with one shared lifecycle."""

__version__ = "0.1.0"
