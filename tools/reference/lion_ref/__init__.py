"""lion_ref: plain-PyTorch reference implementation of LION (JiuTian-LION, CVPR 2024).

Parameter names follow the upstream state-dict keys; see tools/reference/README.md.
Modules load lazily so that importing one part does not pull the others.
"""
