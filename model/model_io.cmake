# config, checkpoints, shard plan: llmint8_model_io
