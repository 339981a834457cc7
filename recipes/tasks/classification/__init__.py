"""Classification task package."""
