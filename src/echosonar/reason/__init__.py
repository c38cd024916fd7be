"""The EchoSonar-R language model: tokenizer, projectors, prompt, parser, generation, SFT, GRPO."""
