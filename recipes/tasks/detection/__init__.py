"""Detection task package."""
