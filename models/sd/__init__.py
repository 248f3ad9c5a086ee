"""Generation on SD1.5 / SDXL (no ComfyUI import). One line per module:

types               the values between the nodes (PipelineHandle, Conditioning, ControlEntry, LoraRef), socket names
pipeline            load a checkpoint / diffusers folder into cached Components (offline; tokenizers from CLIP's BPE)
convert             single-file checkpoints → diffusers configs and weights; configs/ holds the shipped configs
schedulers          the scheduler choices and their diffusers schedulers
prompt_tokens       the prompt-weighting grammar and the 77-token chunks
prompt              prompt text → VK_CONDITIONING (clip skip, weights, the text encoders' LoRAs)
sampler_settings    the sampler's settings and limits, checked in words
run_hooks           the sampler's extension point: Run, StepInputs, RunHook (what a VK_CONTROL kind does in a run)
sampler             one denoising run as diffusers does it (txt2img, img2img, inpainting) with its run hooks
memory              memory estimate before a run, cancellable UNet / VAE calls
lora_formats        LoRA files → normalised layers (kohya, diffusers/PEFT, ComfyUI; the architecture)
lora_lycoris        LyCORIS LoHa / LoKr layers → ΔW
lora                LoRA loading through the cache, module-name resolution, the stack for a run
lora_apply          patching a LoRA stack in place once per stack and restoring the originals exactly
controlnet_files    ControlNet files → ControlNetModel (layouts, LDM names, config from the weights)
controlnet          ControlNet handles, hint images, per-step residuals, the sampler hook
clip_vision         CLIP vision encoders for IP-Adapter (config from the weights)
resampler           the IP-Adapter Plus / InstantID Resampler's key names → diffusers'
ip_adapter          IP-Adapter files: what kind, which encoder; loading with its CLIP vision encoder
ip_adapter_run      reference images → image tokens, style / composition modes, the sampler hook
ip_attention        IP attention processors installed on the UNet for one run (IP-Adapter and InstantID)
instantid           InstantID: the adapter file, the IdentityNet, faces → a VK_CONTROL entry
instantid_keypoints the five face keypoints → the IdentityNet's hint image
instantid_run       the face embedding → image tokens, the sampler hook (IP attention + IdentityNet)
"""
