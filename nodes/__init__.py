"""The pack's ComfyUI nodes: extension.py registers them (V3 schema), erase.py defines them, and
comfy_model.py / anchor_samples.py adapt ComfyUI's MODEL, CONDITIONING and sampler to the engine."""
