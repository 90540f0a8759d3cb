"""Pink's bottleneck adapter (upstream pink/model/adapter.py ``AdapterLayer``), plain PyTorch.

    y = x + tune_adapter_b(act(tune_adapter_a(x)))

``tune_adapter_a`` is Linear(d, hidden_dim) and ``tune_adapter_b`` Linear(hidden_dim, d), both
with bias; act is SiLU when ``non_linear`` else the identity. The adapter is *in series*: its
output replaces x as the input of the sub-layer it precedes (see clip.py, llama.py), so the
residual ``+ x`` here is the adapter's own, inside the sub-layer's input.

Two upstream facts this module keeps, on purpose:
  * ``scale`` is stored by upstream's constructor but its forward never multiplies by it, so it
    changes nothing (and is not a parameter: no state-dict key). Kept as a plain attribute.
  * dropout sits between act and tune_adapter_b; at inference it is the identity, so it is
    left out here.
"""
import torch.nn as nn
import torch.nn.functional as F


class AdapterLayer(nn.Module):
    def __init__(self, in_features, hidden_dim=8, scale=1.0, non_linear=False):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.scale = scale  # unused by the forward, as upstream
        self.non_linear = non_linear
        self.tune_adapter_a = nn.Linear(in_features, hidden_dim, bias=True)
        self.tune_adapter_b = nn.Linear(hidden_dim, in_features, bias=True)

    def forward(self, x):
        down = self.tune_adapter_a(x)
        if self.non_linear:
            down = F.silu(down)
        return self.tune_adapter_b(down) + x
