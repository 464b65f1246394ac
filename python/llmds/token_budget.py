"""Global token budgets for KV-cache, prompt and context-window tokens: reserve, commit, release."""

from llmds._core import TokenBudget as TokenBudget

__all__ = ["TokenBudget"]
