"""The core that the CLI and the agent both import: plans, rendering, schemas, secrets, the audit chain.

It imports nothing from `runner.cli` or `agent` (checked in CI by the import contracts in setup.cfg).
"""
