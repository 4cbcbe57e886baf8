"""Training: oracle and multi-task LoRAs, reconstruction and SFT of the generator.

Each recipe is a pydantic config model (:mod:`.config`) plus a function that trains into a run directory
(:mod:`.run`) with the shared loop (:mod:`.loop`)::

    from text2lora.train import load_config, train_sft
    cfg = load_config("sft", "configs/generator.yaml", ["--steps", "100"])
    result = train_sft(cfg, "runs/sft")            # result.run_dir / "best" is a generator checkpoint

The same functions back ``t2l train lora|mt-lora|recon|sft``.
"""

from .config import RECIPES, LoRAConfig, MTLoRAConfig, ReconConfig, SFTConfig, TrainConfig, load_config
from .loop import LoopResult, NonFiniteLossError, Trainer, train_loop
from .lora import train_lora, train_mt_lora
from .recon import load_library, recon_report, train_recon
from .run import RunDir
from .sft import train_sft

__all__ = ["RECIPES", "TrainConfig", "LoRAConfig", "MTLoRAConfig", "ReconConfig", "SFTConfig", "load_config",
           "LoopResult", "NonFiniteLossError", "Trainer", "train_loop", "RunDir", "train_lora", "train_mt_lora",
           "train_recon", "load_library", "recon_report", "train_sft"]
