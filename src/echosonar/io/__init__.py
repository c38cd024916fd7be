"""On-disk formats: atomic writes, safetensors checkpoints, manifests."""
