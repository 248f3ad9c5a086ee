"""Generation on SD1.5 / SDXL: the values between nodes (types), pipeline loading and single-file conversion
(pipeline, convert, configs/), schedulers, prompt encoding, the LCM sampler and its memory guards, LoRAs
(parse, formats, LyCORIS, in-place application), ControlNet, IP-Adapter (with its CLIP vision encoder and
attention) and InstantID."""
