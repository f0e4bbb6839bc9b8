"""The service the runner answers: operation wire models, limits and signed webhook delivery."""
