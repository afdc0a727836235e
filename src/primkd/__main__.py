"""``python -m primkd`` runs the command line."""

from primkd.cli import main

main()
