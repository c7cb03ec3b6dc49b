"""The agent lifecycle operator: runs AI agents as Pods and mirrors their lives into Valkey."""
