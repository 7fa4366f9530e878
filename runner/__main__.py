"""`python -m runner` is `deployplan`."""

from runner.cli.main import main

main()
