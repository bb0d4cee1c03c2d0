"""Generations that outlive their HTTP request: async jobs, durable vendor jobs."""
