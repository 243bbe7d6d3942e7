"""Models: backbones, LoRA, FLOP accounting and the training workbench. Knows nothing of federation."""
