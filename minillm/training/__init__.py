"""Training: SFT and REINFORCE, their run loop, run-folder checkpoints."""
