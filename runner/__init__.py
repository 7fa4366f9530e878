"""deployplan: lint, render, dry-run and apply deploy plans; follow and audit deploys."""

__version__ = "0.1.0"
