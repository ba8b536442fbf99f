"""Prompts, the OpenAI-compatible client, rate limits, retries, pricing, checks, simulator."""
