"""`python -m runner` is `deployplan`."""

from runner.cli import main

main()
