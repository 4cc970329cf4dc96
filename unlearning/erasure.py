"""What an erasure run produces: the learned weight deltas, what made them, and how training went."""
from dataclasses import dataclass, field

PACK_VERSION = "0.1.0"


@dataclass
class Erasure:
    deltas: dict                      # weight key (as the model names it) -> float32 delta on the CPU
    metadata: dict                    # method, divergence and its settings, concepts, steps, seed, base model
    records: list = field(default_factory=list)   # one engine.StepRecord per step
