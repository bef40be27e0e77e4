"""``python -m faceseal`` runs the CLI."""

from faceseal.cli import main

main()
