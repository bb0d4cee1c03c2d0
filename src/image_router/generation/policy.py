"""The settings the generation use case runs by, and nothing else.

The composition root (`resources.build_generator`) fills it from the operator's settings;
the use case never sees the rest of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from image_router.generation.attempts import RoutingPolicy


@dataclass(frozen=True)
class GenerationPolicy:
    image_deadline_s: float  # a whole request, every attempt included
    video_deadline_s: float
    attempt_timeout_s: float | None  # one vendor attempt; None: the request's deadline
    retry_backoff_s: float  # before asking a vendor that said "slow down" again
    retention_prompts_days: int  # 0: prompts are never stored
    retention_outputs_hours: int
    pricing_url: str  # where the 402 of an empty balance sends the client

    def deadline_s(self, modality: str) -> float:
        return self.video_deadline_s if modality == "video" else self.image_deadline_s

    def routing(self, deadline_s: float) -> RoutingPolicy:
        return RoutingPolicy(
            attempt_timeout_s=self.attempt_timeout_s or deadline_s,
            backoff_s=self.retry_backoff_s,
        )
