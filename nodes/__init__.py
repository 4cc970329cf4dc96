"""The pack's ComfyUI nodes: extension.py registers them (V3 schema); concepts.py, erase.py, options.py
and save.py define them; comfy_model.py and anchor_samples.py adapt ComfyUI's MODEL, CONDITIONING and
sampler to the engine."""
