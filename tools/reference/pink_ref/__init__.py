"""pink_ref: plain-PyTorch reference of Pink (SY-Xuan/Pink, CVPR 2024): the CLIP ViT-L/14
vision tower with Pink's bottleneck adapters and mm_projector, and the LLaMA-2 decoder with
Pink's adapters. Parameter names follow Pink's state-dict keys; see README.md here.
"""
