"""Copies of Hugging Face transformers' RMSNorm modules (transformers itself
is optional), for the patch and compile tests: fastnorm.torch.patch knows
them by class name."""

import torch


class LlamaRMSNorm(torch.nn.Module):
    """A copy of transformers' LlamaRMSNorm (transformers itself is optional)."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class GemmaRMSNorm(torch.nn.Module):
    """A copy of transformers' GemmaRMSNorm: the scale is (1 + weight), and
    everything is computed in float32 with one rounding at the end."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        out = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * (1.0 + self.weight.float())).type_as(x)
