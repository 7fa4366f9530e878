"""The Deploy Agent: refuses anything but the four-step plan, runs it against Docker, audits it."""
