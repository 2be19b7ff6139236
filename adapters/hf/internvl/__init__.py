"""InternVL2 in-process (``hf-internvl``): options and registration, the adapter (native and remote-code routes), dynamic tiling, the image-only processor."""
