"""The `deployplan` command line; it imports the core (`runner.core`), never the agent."""
